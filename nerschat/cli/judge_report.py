"""`nerschat judge-report OUT`: re-summarise a judging output file and draw its plots."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.text import Text

from nerschat.cli.common import console, one_line


@click.command(name="judge-report")
@click.argument("output", metavar="OUT.jsonl", type=click.Path(dir_okay=False))
@click.option("-d", "--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where SUMMARY.json and the PNGs go [default: OUT.report/ beside OUT].")
@click.option("--no-plots", is_flag=True, help="Only SUMMARY.json and the table.")
@click.option("--json", "as_json", is_flag=True, help="Print SUMMARY.json instead of the table.")
def judge_report(output: str, directory: str | None, no_plots: bool, as_json: bool) -> None:
    """Summarise a judge output (any --mode) and draw its plots.

    Rates with 95% intervals, rankings, agreement with gold verdicts; PNG plots of win rates,
    score histograms, the confusion matrix and position bias.
    """
    from nerschat.judging.report import report_dir, summarize_output, summary_table

    target = Path(directory) if directory else report_dir(output)
    summary, path = summarize_output(output, target)
    written = []
    if not no_plots:
        from nerschat.judging.plots import draw

        written = draw(summary, target)
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    console.print(summary_table(summary))
    console.print(Text(one_line(f"summary: {path}")), highlight=False)
    for png in written:
        console.print(Text(one_line(f"plot:    {png}")), highlight=False)
