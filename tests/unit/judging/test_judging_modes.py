"""Each protocol's prompt building and verdict parsing, on canned replies."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx2
import pytest
from scripted import Scripted, single

from nerschat.judging import AFFINITY_HEADER, make_task, task_from_dict
from nerschat.judging.modes import ClassifyTask, JudgingConfigError, PairwiseTask, ScoreTask
from nerschat.workflows.inputs import FieldError, InputError, iter_lines, parse_line

PAIR = {"id": "p1", "question": "Capital of France?", "answer_a": "Paris", "answer_b": "Lyon",
        "model_a": "good", "model_b": "bad"}


def slot_holding(prompt: str, text: str) -> str:
    """'A' or 'B': where the prompt shows the answer `text`."""
    return "A" if prompt.index(text) < prompt.index("Answer B:") else "B"


def user_prompt(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


async def run_pair(answer: Any, record: dict[str, Any] | None = None,
                   **options: Any) -> tuple[dict[str, Any], Scripted]:
    server = Scripted(answer)
    task = make_task("pairwise", model="m", **options)
    assert isinstance(task, PairwiseTask)
    result = await task.judge(server.client(), task.parse(record or PAIR))
    return result, server


async def test_pairwise_consistent_judge_wins_in_both_orders() -> None:
    result, server = await run_pair(lambda p, b: single(slot_holding(p, "Paris")))
    assert result["winner"] == "a" and result["consistent"] and not result["flipped"]
    assert [v["order"] for v in result["verdicts"]] == ["ab", "ba"]
    assert [v["label"] for v in result["verdicts"]] == ["A", "B"]
    assert result["model_a"] == "good" and result["error"] is None
    # order ab shows a first, order ba shows b first
    prompts = [user_prompt(b) for b in server.requests if "structured_outputs" in b]
    assert prompts[0].index("Paris") < prompts[0].index("Lyon")
    assert prompts[1].index("Lyon") < prompts[1].index("Paris")
    # reasoning request, then the forced choice that extends it
    choice = server.requests[1]
    assert choice["structured_outputs"] == {"choice": ["A", "B", "tie"]}
    assert choice["messages"][-1]["content"].endswith("Final answer: ")
    assert server.reasoning in choice["messages"][-1]["content"]


async def test_pairwise_order_flip_counts_as_tie_and_is_reported() -> None:
    result, _ = await run_pair(lambda p, b: single("A"))  # always the first slot
    assert result["winner"] == "tie"
    assert result["consistent"] is False and result["flipped"] is True
    assert [v["winner"] for v in result["verdicts"]] == ["a", "b"]


async def test_pairwise_tie_and_half_disagreement() -> None:
    result, _ = await run_pair(lambda p, b: single("tie"))
    assert (result["winner"], result["consistent"], result["flipped"]) == ("tie", True, False)
    # a in one order, tie in the other: inconsistent, a tie, but not a flip
    answers = iter(["A", "tie"])
    result, _ = await run_pair(lambda p, b: single(next(answers)))
    assert (result["winner"], result["consistent"], result["flipped"]) == ("tie", False, False)


async def test_pairwise_probabilities_map_back_to_answers() -> None:
    def answer(prompt: str, body: dict[str, Any]) -> Any:
        good = slot_holding(prompt, "Paris")
        bad = "B" if good == "A" else "A"
        return single(good, {good: 0.7, bad: 0.1, "tie": 0.2})

    result, _ = await run_pair(answer)
    assert result["probs"] == pytest.approx({"a": 0.7, "b": 0.1, "tie": 0.2})
    assert result["verdicts"][1]["probs"] == pytest.approx({"a": 0.7, "b": 0.1, "tie": 0.2})


async def test_pairwise_one_order_and_affinity_key_per_item() -> None:
    result, server = await run_pair(lambda p, b: single("B"), both_orders=False)
    assert result["winner"] == "b" and len(server.requests) == 2
    keys = {h[AFFINITY_HEADER.lower()] for h in server.headers}
    assert len(keys) == 1 and len(keys.pop()) == 16
    other, server2 = await run_pair(lambda p, b: single("B"), {**PAIR, "id": "p2"})
    assert {h[AFFINITY_HEADER.lower()] for h in server2.headers} != {
        h[AFFINITY_HEADER.lower()] for h in server.headers}
    _, server3 = await run_pair(lambda p, b: single("B"), affinity=False)
    assert all(AFFINITY_HEADER.lower() not in h for h in server3.headers)


async def test_pairwise_gold_and_configurable_fields() -> None:
    record = {"id": "7", "prompt": "Capital of France?", "left": "Paris", "right": "Lyon",
              "gold": "A"}
    result, _ = await run_pair(lambda p, b: single(slot_holding(p, "Paris")), record,
                               field_map={"question": "prompt", "answer_a": "left",
                                          "answer_b": "right"})
    assert result["id"] == "7" and result["gold"] == "a" and result["correct"] is True


def test_pairwise_missing_template_field_is_file_line_error(tmp_path: Path) -> None:
    task = make_task("pairwise", reference=True)
    with pytest.raises(FieldError) as caught:
        task.parse(PAIR)
    assert caught.value.field == "reference"
    source = tmp_path / "pairs.jsonl"
    lines = [{**PAIR, "reference": "Paris"}, {**PAIR, "id": "p2"}]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(InputError, match=r"pairs.jsonl:2: field 'reference': used by the prompt"):
        for number, raw in iter_lines(source):
            parse_line(source, number, raw, task.parse)
    with pytest.raises(FieldError) as caught:
        task.parse({k: v for k, v in PAIR.items() if k != "answer_b"} | {"reference": "x"})
    assert caught.value.field == "answer_b"
    with pytest.raises(FieldError, match="must be 'a', 'b' or 'tie'"):
        make_task("pairwise").parse({**PAIR, "gold": "left"})


async def test_score_multi_token_label_on_the_chosen_path() -> None:
    # "10" as "1" + "0" (digit-wise tokenizer): P(1 then 0) = 0.6 * 0.5
    def answer(prompt: str, body: dict[str, Any]) -> Any:
        return "10", [("1", {"1": 0.6, "9": 0.3, "8": 0.1}), ("0", {"0": 0.5, "<eos>": 0.5})]

    server = Scripted(answer)
    task = make_task("score", model="m", scale="1-10")
    assert isinstance(task, ScoreTask)
    result = await task.judge(server.client(), task.parse({"id": "s", "question": "q",
                                                           "answer": "x", "gold": 10}))
    assert result["score"] == 10 and result["correct"] is True
    assert result["probs"]["10"] == pytest.approx(0.3) and result["probs"]["1"] == pytest.approx(0.3)
    assert result["expected_score"] == pytest.approx(0.3 * 10 + 0.3 * 1 + 0.3 * 9 + 0.1 * 8)
    assert len(server.requests) == 2  # no probe needed
    prompt = user_prompt(server.requests[0])
    assert "from 1 (worst) to 10 (best)" in prompt
    assert server.requests[1]["structured_outputs"]["choice"] == [str(i) for i in range(1, 11)]


async def test_score_probes_the_branch_not_taken() -> None:
    def answer(prompt: str, body: dict[str, Any]) -> Any:
        if body.get("max_tokens") == 1:  # the probe: what follows a prefilled "1"
            assert body["messages"][-1]["content"].endswith("Final answer: 1")
            return single("0", {"0": 0.75, "\n": 0.25})
        return single("9", {"9": 0.5, "1": 0.4, "8": 0.1})

    server = Scripted(answer)
    task = make_task("score", model="m", scale="1-10")
    result = await task.judge(server.client(), task.parse({"id": "s", "question": "q",
                                                           "answer": "x"}))
    assert result["score"] == 9
    assert result["probs"]["10"] == pytest.approx(0.3) and result["probs"]["1"] == pytest.approx(0.1)
    assert result["expected_score"] == pytest.approx(0.5 * 9 + 0.3 * 10 + 0.1 * 1 + 0.1 * 8)
    assert len(server.requests) == 3


async def test_score_single_token_labels_and_leading_space() -> None:
    server = Scripted(lambda p, b: single("10", {"10": 0.5, " 10": 0.2, "9": 0.3}))
    task = make_task("score", model="m", scale="1-10")
    result = await task.judge(server.client(), task.parse({"id": "s", "question": "q",
                                                           "answer": "x"}))
    assert result["expected_score"] == pytest.approx(0.7 * 10 + 0.3 * 9)
    assert len(server.requests) == 2


def test_score_scale_and_gold_checks() -> None:
    task = make_task("score", scale="-2-2")
    assert isinstance(task, ScoreTask) and task.labels == ["-2", "-1", "0", "1", "2"]
    with pytest.raises(JudgingConfigError, match="LOW-HIGH"):
        make_task("score", scale="1..5")
    with pytest.raises(JudgingConfigError, match="below"):
        make_task("score", scale="5-1")
    with pytest.raises(FieldError, match="integer from 1 to 10"):
        make_task("score").parse({"id": "s", "question": "q", "answer": "x", "gold": 11})
    item = make_task("score").parse({"id": "s", "question": "q", "answer": "x", "reference": 4})
    assert item.gold == 4  # type: ignore[union-attr]


async def test_classify_label_descriptions_and_multi_token_probability() -> None:
    def answer(prompt: str, body: dict[str, Any]) -> Any:
        return "incorrect", [("in", {"correct": 0.3, "in": 0.7}),
                             ("correct", {"correct": 0.9, "valid": 0.1})]

    server = Scripted(answer)
    task = make_task("classify", model="m",
                     labels="correct=matches the facts;incorrect=contradicts them")
    assert isinstance(task, ClassifyTask)
    result = await task.judge(server.client(), task.parse(
        {"id": "c", "question": "q", "answer": "x", "reference": "incorrect"}))
    assert result["label"] == "incorrect" and result["correct"] is True
    assert result["probability"] == pytest.approx(0.63 / 0.93, abs=1e-5)
    assert "- correct: matches the facts\n- incorrect: contradicts them" in user_prompt(
        server.requests[0])


async def test_classify_off_list_answer_is_a_per_item_error_after_retries() -> None:
    server = Scripted(lambda p, b: single("maybe"))
    task = make_task("classify", model="m", labels="yes,no", attempts=2)
    result = await task.judge(server.client(), task.parse({"id": "c", "question": "q",
                                                           "answer": "x"}))
    assert result["label"] is None and "'maybe', not one of yes, no" in result["error"]
    assert "after 2 attempt(s)" in result["error"] and len(server.requests) == 4


def test_classify_label_checks() -> None:
    with pytest.raises(JudgingConfigError, match="two labels"):
        make_task("classify", labels="only")
    with pytest.raises(JudgingConfigError, match="duplicate"):
        make_task("classify", labels="a,a")
    with pytest.raises(FieldError, match="must be one of yes, no"):
        make_task("classify", labels="yes,no").parse(
            {"id": "c", "question": "q", "answer": "x", "gold": "perhaps"})


async def test_best_of_is_todays_judge_with_affinity() -> None:
    server = Scripted(lambda p, b: single("B", {"A": 0.2, "B": 0.8}))
    task = make_task("best-of", model="m", both_orders=True)
    record = {"id": "b", "question": "q", "answers": ["x", "y"], "reference": 1}
    result = await task.judge(server.client(), task.parse(record))
    assert result["mode"] == "best-of" and result["agreement"] is False  # B, then B reversed
    keys = {h[AFFINITY_HEADER.lower()] for h in server.headers}
    assert len(keys) == 1 and len(server.requests) == 4


@pytest.mark.parametrize("mode,options", [
    ("best-of", {"both_orders": True}), ("pairwise", {"both_orders": False}),
    ("score", {"scale": "0-4"}), ("classify", {"labels": "safe=harmless;unsafe=harmful"})])
def test_task_round_trips_through_its_plain_description(mode: str, options: dict[str, Any]
                                                        ) -> None:
    task = make_task(mode, model="m", **options)
    spec = json.loads(json.dumps(task.to_dict()))  # what a Parsl worker receives
    again = task_from_dict(spec)
    assert type(again) is type(task) and again.to_dict() == task.to_dict()


def test_pairwise_template_must_show_both_answers() -> None:
    with pytest.raises(JudgingConfigError, match=r"add \{answer_b\}"):
        make_task("pairwise", template="{question} {answer_a}")


def test_unknown_mode_and_option() -> None:
    with pytest.raises(JudgingConfigError, match="unknown judging mode"):
        make_task("ranking")
    with pytest.raises(JudgingConfigError, match="pairwise"):
        make_task("pairwise", scale="1-10")


async def test_same_text_tokens_add_up_and_masked_tokens_count_nothing() -> None:
    # as vLLM reports them for gemma: "7" twice (two token ids), masked tokens at -9999
    def answer(prompt: str, body: dict[str, Any]) -> Any:
        return "10", [("1", {"1": 0.5, "7": 0.2, "<mask>": 0.0}),
                      ("0", {"0": 0.999, "<eos>": 0.001})]

    server = Scripted(answer)
    original = server.handler

    def handler(request: Any) -> Any:
        response = original(request)
        body = json.loads(response.content)
        content = (body["choices"][0]["logprobs"] or {}).get("content") or []
        if content:
            tops = content[0]["top_logprobs"]
            tops.append({"token": "7", "logprob": math.log(0.3), "bytes": None})
        return httpx2.Response(200, json=body)

    server.handler = handler  # type: ignore[method-assign]
    task = make_task("score", model="m", scale="1-10")
    result = await task.judge(server.client(), task.parse({"id": "s", "question": "q",
                                                           "answer": "x"}))
    assert result["probs"]["7"] == pytest.approx(0.5)
    assert result["probs"]["10"] == pytest.approx(0.5 * 0.999, abs=1e-6)
    assert result["expected_score"] == pytest.approx(0.5 * 7 + 0.4995 * 10 + 0.0005 * 1,
                                                     abs=1e-3)
