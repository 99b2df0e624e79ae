"""`nerschat embed`: embed a corpus into shard files plus a manifest."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from nerschat.cli.common import console, registry_option
from nerschat.errors import FailureError
from nerschat.workflows.embed import EmbedOptions, run_embed
from nerschat.workflows.summary import model_cost_rows

ENVIRONMENT = """\b
With --config, also the variables that Parsl config reads (see docs/parsl-configs.md).
Exit status: 0 done (rejected documents are NaN rows listed in the manifest's "errors"),
1 when every document failed or the run could not go on (another run writing OUTDIR), 2 for
bad input or options, an empty input or one whose every document is invalid, or an OUTDIR
that is or holds the input or holds files nerschat did not write."""


@click.command(epilog=ENVIRONMENT)
@click.argument("source", metavar="INPUT", type=click.Path())
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False),
              help="Output directory (shard .npy files + manifest.json).")
@click.option("--model", default=None, help="Served model name [default: the one embedding "
                                            "model served].")
@click.option("--prompt-name", default=None, help="TEI prompt name, e.g. query or passage.")
@click.option("--prefix", default="", help="Literal text put before every document.")
@click.option("--shards", type=click.IntRange(min=1), default=None,
              help="Number of shard files (and Parsl apps with --config) [default: one file "
                   "per 4096 documents; 4 apps].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Most texts per request [default: the limit each endpoint advertises].")
@click.option("--in-flight", type=click.IntRange(min=1), default=None,
              help="Fixed number of batches in flight [default: adapted to the endpoints' "
                   "measured latency].")
@click.option("--truncate/--no-truncate", default=True, show_default=True,
              help="Truncate over-long texts (counted), or record them as errors.")
@click.option("--id-column", default="id", show_default=True, help="Id field/column.")
@click.option("--text-column", default="text", show_default=True, help="Text field/column.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True),
              help="Parsl config file: shards run as apps on its executor.")
@click.option("--executor", default="clients", show_default=True,
              help="Executor label of the Parsl config that runs the shards.")
@click.option("--skip-invalid", is_flag=True,
              help="Record invalid documents in OUTDIR/invalid.jsonl and go on.")
@click.option("--restart", "restart_run", is_flag=True,
              help="Delete OUTDIR's earlier results first (needed after changing the model, "
                   "prompt name, prefix or truncation).")
@click.option("--timeout", type=click.FloatRange(min=0), default=600.0, show_default=True,
              help="Seconds to wait for a ready endpoint.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@registry_option
def embed(source: str, outdir: str, model: str | None, prompt_name: str | None, prefix: str,
          shards: int | None, batch_size: int | None, in_flight: int | None, truncate: bool,
          id_column: str, text_column: str, config_path: str | None, executor: str,
          skip_invalid: bool, restart_run: bool, timeout: float, no_progress: bool,
          registry_path: str | None) -> None:
    """Embed INPUT (JSONL id/text, a directory of text files, or Parquet)."""
    options = EmbedOptions(model=model, prompt_name=prompt_name, prefix=prefix,
                           truncate=truncate, batch_size=batch_size, in_flight=in_flight)
    report = run_embed(source, outdir, registry=registry_path, options=options, shards=shards,
                       skip_invalid=skip_invalid, config_path=config_path, executor=executor,
                       restart_run=restart_run, id_field=id_column, text_field=text_column,
                       timeout=timeout, console=console, show_progress=not no_progress)
    manifest = report.manifest
    table = Table(title="embed summary", show_header=False, title_justify="left")
    table.add_row("model", f"{escape(manifest['model'])} (dimension {manifest['dimension']})")
    table.add_row("documents", f"{manifest['count']} ({report.computed_texts} embedded this run, "
                               f"{report.reused_texts} already done)")
    if report.invalid:
        table.add_row("invalid documents skipped", str(report.invalid))
    table.add_row("shards", str(len(manifest["shards"])))
    table.add_row("normalized", str(manifest["normalized"]))
    table.add_row("truncated", str(manifest["truncated"]))
    table.add_row("errors", str(len(manifest["errors"])))
    for doc_id, message in list(manifest["errors"].items())[:3]:
        table.add_row(f"  {escape(doc_id[:40])}", escape(message[:80]))
    table.add_row("throughput", f"{report.texts_per_second:.1f} texts/s ({report.seconds:.1f} s)")
    if report.computed_texts:
        model_cost_rows(table, registry_path, manifest["model"], report.seconds,
                        report.computed_texts, 0)
    table.add_row("output", escape(f"{outdir}/manifest.json"))
    console.print(table)
    if manifest["count"] and len(manifest["errors"]) == manifest["count"]:
        raise FailureError(f"all {manifest['count']} documents failed (first: "
                           f"{next(iter(manifest['errors'].values()))[:120]}); see "
                           f"{outdir}/manifest.json")
