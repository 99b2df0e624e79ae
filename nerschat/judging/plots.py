"""PNG plots of a judging summary (matplotlib, Agg backend: no display needed).

`draw(summary, directory)` writes what the summary has data for and returns the paths:

- `win-rates.png`     pairwise: a/tie/b rates with 95% Wilson intervals (per model pair when
                      the lines name models), or classify: label rates with intervals
- `ranking.png`       pairwise with models: Bradley-Terry ratings with bootstrap intervals
- `position-bias.png` pairwise: first/second/tie picks per presentation order
- `scores.png`        score: histogram of chosen scores per group
- `confusion.png`     any mode with gold verdicts: the confusion matrix

Names from the output file (models, groups, labels) are drawn as they are: `$...$` is not
read as mathtext (`text.parse_math` off), control characters are shown escaped (`one_line`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nerschat.cli.common import one_line
from nerschat.errors import UsageError


class PlotsUnavailable(UsageError):
    """matplotlib is not installed."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable("plots need matplotlib: pip install 'nerschat[report]' "
                               "(or pass --no-plots)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw(summary: dict[str, Any], directory: str | Path) -> list[Path]:
    """Write the plots the summary has data for into `directory`; returns their paths."""
    plt = _pyplot()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, painter in (("win-rates.png", _rates), ("ranking.png", _ranking),
                          ("position-bias.png", _position_bias), ("scores.png", _scores),
                          ("confusion.png", _confusion)):
        with plt.rc_context({"text.parse_math": False, "text.usetex": False}):
            figure = painter(plt, summary)
            if figure is None:
                continue
            path = directory / name
            figure.tight_layout()
            figure.savefig(path, dpi=100)
            plt.close(figure)
        written.append(path)
    return written


def _name(value: object) -> str:
    """A name from the output file as a plot label: one line, control characters escaped."""
    text = one_line(str(value))
    return text if len(text) <= 60 else text[:57] + "..."


def _bars(axis: Any, names: list[str], rows: list[dict[str, float]], colour: str) -> None:
    rates = [row["rate"] for row in rows]
    errors = [[max(0.0, row["rate"] - row["low"]) for row in rows],
              [max(0.0, row["high"] - row["rate"]) for row in rows]]
    axis.barh(names, rates, xerr=errors, color=colour, capsize=4)
    axis.set_xlim(0, 1)
    axis.invert_yaxis()


def _rates(plt: Any, summary: dict[str, Any]) -> Any:
    mode = summary["mode"]
    if mode == "pairwise" and summary.get("pairs"):
        pairs = summary["pairs"]
        figure, axis = plt.subplots(figsize=(7, 0.6 * len(pairs) + 1.5))
        labels = [_name(f"{p['model']} vs {p['opponent']}") for p in pairs]
        left = [0.0] * len(pairs)
        for key, colour in (("wins", "#4c9f70"), ("tie", "#b0b0b0"), ("losses", "#d1495b")):
            widths = [p[key]["rate"] for p in pairs]
            axis.barh(labels, widths, left=left, color=colour, label=key)
            if key == "wins":
                below = [max(0.0, w - p[key]["low"]) for w, p in zip(widths, pairs)]
                above = [max(0.0, p[key]["high"] - w) for w, p in zip(widths, pairs)]
                axis.errorbar(widths, labels, xerr=[below, above], fmt="none", ecolor="black",
                              capsize=4)
            left = [a + b for a, b in zip(left, widths)]
        axis.set_xlim(0, 1)
        axis.invert_yaxis()
        axis.set_xlabel("share of comparisons (first model's wins / ties / losses, 95% CI)")
        axis.legend(loc="lower right", fontsize=8)
        axis.set_title("pairwise win rates")
        return figure
    if mode in ("pairwise", "classify") and summary.get("outcomes"):
        outcomes = summary["outcomes"]
        names = list(outcomes)
        figure, axis = plt.subplots(figsize=(6, 0.5 * len(names) + 1.5))
        _bars(axis, [_name(n) for n in names], [outcomes[n] for n in names], "#4c72b0")
        axis.set_xlabel("share of items (95% Wilson interval)")
        axis.set_title("verdicts" if mode == "pairwise" else "labels")
        return figure
    return None


def _ranking(plt: Any, summary: dict[str, Any]) -> Any:
    ranking = summary.get("ranking")
    if not ranking:
        return None
    figure, axis = plt.subplots(figsize=(6, 0.5 * len(ranking) + 1.5))
    names = [_name(row["model"]) for row in ranking]
    ratings = [row["rating"] for row in ranking]
    errors = [[max(0.0, r["rating"] - r["low"]) for r in ranking],
              [max(0.0, r["high"] - r["rating"]) for r in ranking]]
    axis.errorbar(ratings, names, xerr=errors, fmt="o", capsize=4, color="#4c72b0")
    axis.invert_yaxis()
    axis.set_xlabel("Bradley-Terry rating (Elo scale, 95% bootstrap interval)")
    axis.set_title("ranking")
    return figure


def _position_bias(plt: Any, summary: dict[str, Any]) -> Any:
    bias = summary.get("position_bias")
    if not bias:
        return None
    orders = sorted(bias)
    figure, axis = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / 3
    for k, (slot, colour) in enumerate((("first", "#4c72b0"), ("second", "#dd8452"),
                                        ("tie", "#b0b0b0"))):
        xs = [i + (k - 1) * width for i in range(len(orders))]
        axis.bar(xs, [bias[o][slot] for o in orders], width, label=f"picked {slot}", color=colour)
    axis.set_xticks(range(len(orders)), [_name(f"order {o}") for o in orders])
    axis.set_ylabel("verdicts")
    axis.set_title("position bias: which slot the judge picked")
    axis.legend(fontsize=8)
    return figure


def _scores(plt: Any, summary: dict[str, Any]) -> Any:
    groups = summary.get("groups") if summary["mode"] == "score" else None
    if not groups:
        return None
    figure, axis = plt.subplots(figsize=(7, 3.8))
    names = list(groups)
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        histogram = groups[name]["histogram"]
        xs = [int(v) + (k - (len(names) - 1) / 2) * width for v in histogram]
        mean = groups[name]["mean"]
        label = _name(name if mean is None else f"{name} (mean {mean:.2f})")
        axis.bar(xs, list(histogram.values()), width, label=label)
    low, high = summary["scale"]
    axis.set_xticks(range(low, high + 1))
    axis.set_xlabel("score")
    axis.set_ylabel("items")
    axis.set_title("score distribution")
    axis.legend(fontsize=8)
    return figure


def _confusion(plt: Any, summary: dict[str, Any]) -> Any:
    found = summary.get("agreement")
    if not found or not found.get("confusion"):
        return None
    labels, matrix = [_name(label) for label in found["labels"]], found["confusion"]
    size = 1.8 + 0.5 * len(labels)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axis.text(j, i, str(value), ha="center", va="center",
                      color="white" if value > peak / 2 else "black")
    axis.set_xlabel("judge")
    axis.set_ylabel("gold")
    kappa = found.get("kappa")
    axis.set_title(f"confusion (accuracy {found['accuracy']:.0%}"
                   + (f", kappa {kappa:.2f})" if kappa is not None else ")"))
    figure.colorbar(image, ax=axis, fraction=0.046)
    return figure
