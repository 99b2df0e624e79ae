"""Probabilities of verdict labels from token log-probabilities, multi-token labels included.

A forced choice returns, at each generated position, the top alternatives with their
log-probabilities. When every label is one token, P(label) is read off the first position.
When labels span several tokens ("10" is "1" + "0" in many tokenizers; "incorrect" may be
"in" + "correct"), the first position only gives P(first token), shared by "1" and "10".
`label_probabilities` walks the labels as a string trie over the reported tokens:

    P(label) = product over its tokens of P(token | tokens before it)

and at a prefix that is itself a label and also begins a longer one ("1" vs "10") splits the
mass into "stop here" (1 - P(any continuation towards a label)) and "continue". A
distribution the forced choice did not report (a branch the model did not take) is fetched
with `probe(prefix)`, a one-token request with `prefix` prefilled; branches below `min_mass`
are not probed. The result is normalised over the labels, as in G-Eval (Liu et al. 2023,
"G-Eval: NLG Evaluation using GPT-4 with Better Human Alignment", EMNLP, sec. 2.3: the score
is the probability-weighted sum over the scale's labels).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

TokenDist = dict[str, float]  # token text -> log-probability, at one position
Probe = Callable[[str], Awaitable["TokenDist | None"]]


def response_positions(response: Any) -> list[tuple[str, TokenDist]]:
    """(chosen token, its alternatives) per generated position of a chat completion.

    Empty when the server sent no log-probabilities. The chosen token is always included
    among its position's alternatives. Distinct tokens with the same text (tokenizers have
    several ways to spell "7") are merged: their probabilities add up.
    """
    logprobs = response.choices[0].logprobs
    if logprobs is None or not logprobs.content:
        return []
    positions = []
    for entry in logprobs.content:
        dist: TokenDist = {}
        for alt in entry.top_logprobs or []:
            if alt.logprob is None or not math.isfinite(alt.logprob):
                continue
            seen = dist.get(alt.token)
            dist[alt.token] = alt.logprob if seen is None else _log_add(seen, alt.logprob)
        if entry.logprob is not None and math.isfinite(entry.logprob):
            dist.setdefault(entry.token, entry.logprob)
        positions.append((entry.token, dist))
    return positions


def _log_add(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) without overflow or underflow."""
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


def known_distributions(positions: Sequence[tuple[str, TokenDist]]) -> dict[str, TokenDist]:
    """Prefix already generated -> the distribution at the next position (the chosen path)."""
    known: dict[str, TokenDist] = {}
    prefix = ""
    for token, dist in positions:
        known.setdefault(prefix, dist)
        prefix += token.lstrip() if not prefix else token
    return known


async def label_probabilities(labels: Sequence[str], known: dict[str, TokenDist],
                              probe: Probe | None = None, *, min_mass: float = 1e-3,
                              max_probes: int = 4) -> dict[str, float] | None:
    """Normalised probability of each label, or None when no label got any mass.

    `known`: prefix -> next-token distribution (from `known_distributions`); leading white
    space of the first token is ignored ("Final answer: " may be followed by " 7").
    `probe(prefix)` fetches a missing distribution (at most `max_probes` calls).
    """
    label_set = set(labels)
    probs = dict.fromkeys(labels, 0.0)
    probes_left = max_probes
    frontier: dict[str, float] = {"": 1.0}
    while frontier:
        prefix = min(frontier, key=len)  # shorter prefixes first: children aggregate
        mass = frontier.pop(prefix)
        longer = [label for label in labels if label.startswith(prefix) and label != prefix]
        if prefix in label_set and not longer:
            probs[prefix] += mass  # nothing can follow: the whole branch is this label
            continue
        dist = known.get(prefix)
        if dist is None and probe is not None and probes_left > 0 and mass >= min_mass:
            probes_left -= 1
            dist = await probe(prefix)
            if dist is not None:
                known[prefix] = dist
        if dist is None:
            if prefix in label_set:
                probs[prefix] += mass  # unknown continuation: assume the label ends here
            continue
        onward = 0.0
        for token, logprob in dist.items():
            text = token.lstrip() if not prefix else token
            if not text:
                continue
            nxt = prefix + text
            if not any(label.startswith(nxt) for label in labels):
                continue
            p = math.exp(logprob)
            onward += p
            frontier[nxt] = frontier.get(nxt, 0.0) + mass * p
        if prefix in label_set:
            probs[prefix] += mass * max(0.0, 1.0 - onward)
    total = sum(probs.values())
    if total <= 0.0:
        return None
    return {label: p / total for label, p in probs.items()}


def expected_value(probs: dict[str, float]) -> float:
    """Probability-weighted mean of numeric labels (G-Eval's score)."""
    return float(sum(int(label) * p for label, p in probs.items()))
