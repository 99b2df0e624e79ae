"""`nerschat embed`: embed a corpus into shard files plus a manifest."""

from __future__ import annotations

import click
from rich.table import Table

from nerschat.cli.common import console, fail, registry_option
from nerschat.client.readiness import EndpointTimeout
from nerschat.parsl.config import ConfigError
from nerschat.workflows.embed import EmbedError, EmbedOptions
from nerschat.workflows.embed_run import PlanMismatch, run_embed
from nerschat.workflows.inputs import InputError


@click.command()
@click.argument("source", metavar="INPUT", type=click.Path())
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False),
              help="Output directory (shard .npy files + manifest.json).")
@click.option("--model", default=None, help="Served model name [default: any embedding endpoint].")
@click.option("--prompt-name", default=None, help="TEI prompt name, e.g. query or passage.")
@click.option("--prefix", default="", help="Literal text put before every document.")
@click.option("--shards", type=click.IntRange(min=1), default=None,
              help="Number of shards [default: one per 4096 documents].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Texts per request [default: the server's limit].")
@click.option("--in-flight", type=click.IntRange(min=1), default=None,
              help="Batches in flight [default: from the endpoints' capacity].")
@click.option("--truncate/--no-truncate", default=True, show_default=True,
              help="Truncate over-long texts (counted), or record them as errors.")
@click.option("--id-column", default="id", show_default=True, help="Id field/column.")
@click.option("--text-column", default="text", show_default=True, help="Text field/column.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True),
              help="Parsl config file: shards run as apps on its 'clients' executor.")
@click.option("--skip-invalid", is_flag=True, help="Record invalid documents and go on.")
@click.option("--timeout", type=click.FloatRange(min=0), default=600.0, show_default=True)
@click.option("--no-progress", is_flag=True)
@registry_option
def embed(source: str, outdir: str, model: str | None, prompt_name: str | None, prefix: str,
          shards: int | None, batch_size: int | None, in_flight: int | None, truncate: bool,
          id_column: str, text_column: str, config_path: str | None, skip_invalid: bool,
          timeout: float, no_progress: bool, registry_path: str | None, shared: bool = False) -> None:
    """Embed INPUT (JSONL id/text, a directory of text files, or Parquet)."""
    try:
        options = EmbedOptions(model=model, prompt_name=prompt_name, prefix=prefix,
                               truncate=truncate, batch_size=batch_size, in_flight=in_flight)
        report = run_embed(source, outdir, registry=registry_path, options=options, shards=shards,
                           skip_invalid=skip_invalid, config_path=config_path, id_field=id_column,
                           text_field=text_column, timeout=timeout, console=console,
                           show_progress=not no_progress)
    except InputError as exc:
        fail(f"{exc} (nothing was lost; fix it or use --skip-invalid)", code=2)
    except (ValueError, EmbedError, EndpointTimeout, ConfigError, PlanMismatch) as exc:
        fail(str(exc))
    manifest = report.manifest
    table = Table(title="embed summary", show_header=False, title_justify="left")
    table.add_row("model", f"{manifest['model']} (dimension {manifest['dimension']})")
    table.add_row("documents", str(manifest["count"]))
    table.add_row("shards", f"{len(manifest['shards'])} ({report.computed_shards} computed, "
                            f"{report.reused_shards} already done)")
    table.add_row("normalized", str(manifest["normalized"]))
    table.add_row("truncated", str(manifest["truncated"]))
    table.add_row("errors", str(len(manifest["errors"])))
    table.add_row("throughput", f"{report.texts_per_second:.1f} texts/s ({report.seconds:.1f} s)")
    table.add_row("output", f"{outdir}/manifest.json")
    console.print(table)
