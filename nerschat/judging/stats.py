"""Statistics of judging runs, in numpy only: intervals, rankings, agreement.

Every function is small and standard; its source is cited in its docstring.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal distribution


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion: (low, high), in [0, 1].

    E. B. Wilson (1927), "Probable inference, the law of succession, and statistical
    inference", JASA 22:209-212; recommended over the Wald interval by R. G. Newcombe (1998),
    "Two-sided confidence intervals for the single proportion", Statistics in Medicine
    17:857-872 (method 3; e.g. 81/263 -> 0.2553-0.3662). n = 0 gives (0, 1).
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within 0..{n}, got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    low = 0.0 if successes == 0 else min(p, max(0.0, centre - half))
    high = 1.0 if successes == n else max(p, min(1.0, centre + half))
    return low, high


def rates(counts: dict[str, int], z: float = Z95) -> dict[str, dict[str, float]]:
    """Each outcome's count, share of the total and Wilson 95% interval."""
    total = sum(counts.values())
    result = {}
    for name, count in counts.items():
        low, high = wilson_interval(count, total, z)
        result[name] = {"count": count, "rate": count / total if total else 0.0,
                        "low": low, "high": high}
    return result


def mean_interval(values: Sequence[float], z: float = Z95) -> dict[str, float | int | None]:
    """Summarise values: n, mean, sample standard deviation, 95% interval of the mean.

    The interval is the normal approximation mean +- z s / sqrt(n); None where undefined
    (n = 0, or n = 1 for the spread).
    """
    data = np.asarray(values, dtype=float)
    n = int(data.size)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "low": None, "high": None}
    mean = float(data.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "low": None, "high": None}
    std = float(data.std(ddof=1))
    half = z * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "low": mean - half, "high": mean + half}


def bradley_terry(players: Sequence[str], games: Sequence[tuple[str, str, float]], *,
                  prior: float = 1.0, iterations: int = 10_000, tol: float = 1e-10
                  ) -> np.ndarray:
    """Fit Bradley-Terry strengths by the MM algorithm.

    Returns natural-log strengths with mean 0, in the order of `players`.

    `games`: (player i, player j, score of i: 1 win, 0.5 tie, 0 loss); a tie counts as half a
    win for each side (the convention of the Chatbot Arena leaderboard). `prior`: that many
    virtual games, drawn, of each player against a virtual player of strength 1, so an
    unbeaten or winless player keeps a finite strength (a pseudo-count prior; 0 turns it off).
    D. R. Hunter (2004), "MM algorithms for generalized Bradley-Terry models", Annals of
    Statistics 32:384-406, eq. (3): p_i <- W_i / sum_j n_ij / (p_i + p_j).
    """
    index = {name: i for i, name in enumerate(players)}
    k = len(players)
    counts = np.zeros((k, k))  # counts[i, j]: games between i and j
    wins = np.zeros(k)
    for a, b, score in games:
        i, j = index[a], index[b]
        if i == j:
            continue
        counts[i, j] += 1
        counts[j, i] += 1
        wins[i] += score
        wins[j] += 1 - score
    wins = wins + prior / 2
    strength = np.ones(k)
    for _ in range(iterations):
        pair_sum = strength[:, None] + strength[None, :]
        denominator = (counts / pair_sum).sum(axis=1) + prior / (strength + 1.0)
        updated = wins / np.where(denominator > 0, denominator, 1.0)
        updated = np.where(denominator > 0, updated, strength)
        updated = np.maximum(updated, 1e-300)
        updated /= math.exp(float(np.log(updated).mean()))
        if np.max(np.abs(np.log(updated) - np.log(strength))) < tol:
            strength = updated
            break
        strength = updated
    logs: np.ndarray = np.log(strength)
    return logs - logs.mean()


ELO_SCALE = 400 / math.log(10)  # natural-log strength -> Elo points
ELO_BASE = 1000.0


def bradley_terry_ranking(games: Sequence[tuple[str, str, float]], *, bootstrap: int = 200,
                          seed: int = 0, level: float = 0.95, prior: float = 1.0
                          ) -> list[dict[str, Any]]:
    """Ranking with percentile-bootstrap intervals, best first.

    Each row: `model`, `rank`, `rating` (Elo scale: 1000 + 400 log10 strength, mean 1000),
    `low`/`high` (the `level` percentile interval over `bootstrap` resamples of the games,
    with replacement; B. Efron & R. Tibshirani (1993), "An Introduction to the Bootstrap",
    ch. 13), and `games`, `wins`, `ties`, `losses`.
    """
    players = sorted({name for a, b, _ in games for name in (a, b)})
    if not players:
        return []
    ratings = ELO_BASE + ELO_SCALE * bradley_terry(players, games, prior=prior)
    low = high = ratings
    if bootstrap > 0 and games:
        rng = np.random.default_rng(seed)
        draws = np.empty((bootstrap, len(players)))
        for r in range(bootstrap):
            sample = [games[i] for i in rng.integers(0, len(games), len(games))]
            draws[r] = ELO_BASE + ELO_SCALE * bradley_terry(players, sample, prior=prior)
        tail = (1 - level) / 2 * 100
        low, high = np.percentile(draws, [tail, 100 - tail], axis=0)
    record = {name: {"games": 0, "wins": 0, "ties": 0, "losses": 0} for name in players}
    for a, b, score in games:
        for name, mine in ((a, score), (b, 1 - score)):
            record[name]["games"] += 1
            record[name]["wins" if mine == 1 else "losses" if mine == 0 else "ties"] += 1
    rows: list[dict[str, Any]] = [{"model": name, "rating": float(ratings[i]), "low": float(low[i]),
             "high": float(high[i]), **record[name]} for i, name in enumerate(players)]
    rows.sort(key=lambda row: -row["rating"])
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows


def confusion_matrix(gold: Sequence[Hashable], predicted: Sequence[Hashable],
                     labels: Sequence[Hashable] | None = None
                     ) -> tuple[list[Hashable], np.ndarray]:
    """(labels, matrix) with matrix[i, j] = items whose gold is labels[i], predicted labels[j].

    `labels` default: every value seen, sorted by its string form.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    names = list(labels) if labels is not None else sorted({*gold, *predicted}, key=str)
    position = {name: i for i, name in enumerate(names)}
    matrix = np.zeros((len(names), len(names)), dtype=int)
    for g, p in zip(gold, predicted):
        if g in position and p in position:
            matrix[position[g], position[p]] += 1
    return names, matrix


def accuracy(gold: Sequence[Hashable], predicted: Sequence[Hashable]) -> float | None:
    """Share of predictions equal to gold; None for no items."""
    if not gold:
        return None
    return sum(g == p for g, p in zip(gold, predicted)) / len(gold)


def cohen_kappa(gold: Sequence[Hashable], predicted: Sequence[Hashable],
                labels: Sequence[Hashable] | None = None) -> float | None:
    """Cohen's kappa, (p_o - p_e) / (1 - p_e), of two raters over the same items.

    J. Cohen (1960), "A coefficient of agreement for nominal scales", Educational and
    Psychological Measurement 20:37-46. p_o: observed agreement; p_e: agreement expected from
    the raters' marginal frequencies. None when undefined (no items, or p_e = 1: both raters
    gave one and the same label to everything).
    """
    _, matrix = confusion_matrix(gold, predicted, labels)
    n = matrix.sum()
    if n == 0:
        return None
    observed = np.trace(matrix) / n
    expected = float((matrix.sum(axis=1) / n) @ (matrix.sum(axis=0) / n))
    if math.isclose(expected, 1.0):
        return None
    return float((observed - expected) / (1 - expected))


def histogram(values: Sequence[int], low: int, high: int) -> dict[str, int]:
    """Counts of each integer from `low` to `high` (keys as strings, for JSON)."""
    counts = dict.fromkeys((str(v) for v in range(low, high + 1)), 0)
    for value in values:
        key = str(value)
        if key in counts:
            counts[key] += 1
    return counts
