"""Statistics against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nerschat.judging import stats


def test_wilson_interval_matches_newcombe_1998() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857-872, table I, method 3 (Wilson score)
    assert stats.wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert stats.wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=5e-5)
    assert stats.wilson_interval(0, 20) == pytest.approx((0.0, 0.1611), abs=5e-5)
    assert stats.wilson_interval(1, 29) == pytest.approx((0.0061, 0.1718), abs=5e-5)
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    # the ends are exact, never a rounding error past the observed share
    assert stats.wilson_interval(0, 6)[0] == 0.0 and stats.wilson_interval(6, 6)[1] == 1.0
    with pytest.raises(ValueError):
        stats.wilson_interval(5, 4)


def test_rates_share_and_interval() -> None:
    found = stats.rates({"a": 81, "b": 182})
    assert found["a"]["rate"] == pytest.approx(81 / 263)
    assert (found["a"]["low"], found["a"]["high"]) == stats.wilson_interval(81, 263)


def test_cohen_kappa_hand_computed() -> None:
    # 50 items; both yes 20, rater1 yes/rater2 no 5, rater1 no/rater2 yes 10, both no 15:
    # p_o = 35/50 = 0.7; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = (0.7-0.5)/(1-0.5) = 0.4
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert stats.cohen_kappa(first, second) == pytest.approx(0.4)
    # three labels: matrix [[2,1,0],[0,2,1],[1,0,3]]; p_o = 7/10; row sums 3,3,4 and column
    # sums 3,3,4: p_e = (9+9+16)/100 = 0.34; kappa = (0.7-0.34)/0.66 = 0.5454...
    gold = ["a", "a", "a", "b", "b", "b", "c", "c", "c", "c"]
    said = ["a", "a", "b", "b", "b", "c", "a", "c", "c", "c"]
    assert stats.cohen_kappa(gold, said) == pytest.approx(0.36 / 0.66)
    labels, matrix = stats.confusion_matrix(gold, said)
    assert labels == ["a", "b", "c"] and matrix.tolist() == [[2, 1, 0], [0, 2, 1], [1, 0, 3]]
    assert stats.accuracy(gold, said) == pytest.approx(0.7)
    assert stats.cohen_kappa(["x"] * 4, ["x"] * 4) is None  # p_e = 1: undefined
    assert stats.cohen_kappa([], []) is None


def synthetic_tournament(strengths: dict[str, float], games: int, seed: int
                         ) -> list[tuple[str, str, float]]:
    rng = np.random.default_rng(seed)
    names = list(strengths)
    played = []
    for _ in range(games):
        i, j = rng.choice(len(names), 2, replace=False)
        a, b = names[i], names[j]
        p_a = 1 / (1 + math.exp(strengths[b] - strengths[a]))
        u = rng.random()
        played.append((a, b, 1.0 if u < p_a * 0.9 else 0.5 if u < p_a * 0.9 + 0.1 else 0.0))
    return played


def test_bradley_terry_recovers_known_strengths_and_order() -> None:
    true = {"m0": -1.0, "m1": 1.5, "m2": 0.0, "m3": 0.7, "m4": -0.4}
    games = synthetic_tournament(true, 1500, seed=3)
    rows = stats.bradley_terry_ranking(games, bootstrap=100)
    assert [r["model"] for r in rows] == sorted(true, key=lambda m: -true[m])
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    for row in rows:
        assert row["low"] <= row["rating"] <= row["high"]
    assert sum(r["games"] for r in rows) == 2 * len(games)
    assert sum(r["ties"] for r in rows) > 0
    # without ties or prior the MM fit is the maximum-likelihood estimate: differences of the
    # fitted log-strengths come close to the true ones with many games
    clean = [(a, b, s) for a, b, s in synthetic_tournament(true, 20000, seed=4) if s != 0.5]
    fitted = stats.bradley_terry(list(true), clean, prior=0.0)
    expected = np.array(list(true.values()))
    assert fitted - fitted.mean() == pytest.approx(expected - expected.mean(), abs=0.1)


def test_bradley_terry_two_players_closed_form() -> None:
    # two players, 3 wins to 1: MLE strength ratio 3, i.e. log-strengths +-ln(3)/2
    games = [("x", "y", 1.0)] * 3 + [("x", "y", 0.0)]
    assert stats.bradley_terry(["x", "y"], games, prior=0.0) == pytest.approx(
        [math.log(3) / 2, -math.log(3) / 2])
    # an unbeaten player keeps a finite rating thanks to the prior
    unbeaten = stats.bradley_terry(["x", "y"], [("x", "y", 1.0)] * 5)
    assert np.all(np.isfinite(unbeaten)) and unbeaten[0] > unbeaten[1]


def test_mean_interval_and_histogram() -> None:
    found = stats.mean_interval([2, 4, 4, 4, 5, 5, 7, 9])
    assert found["mean"] == pytest.approx(5.0)
    assert found["std"] == pytest.approx(math.sqrt(32 / 7))
    half = stats.Z95 * math.sqrt(32 / 7) / math.sqrt(8)
    assert (found["low"], found["high"]) == pytest.approx((5 - half, 5 + half))
    assert stats.mean_interval([])["mean"] is None
    assert stats.histogram([1, 3, 3, 9], 1, 4) == {"1": 1, "2": 0, "3": 2, "4": 0}
