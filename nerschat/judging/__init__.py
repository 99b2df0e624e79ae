"""Judging protocols (best-of, pairwise, score, classify), their statistics and reports.

`make_task(mode, **options)` returns an item task the workflow core runs like `JudgeTask`;
`summarize(lines)` turns an output file's lines into the SUMMARY.json dictionary.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nerschat.judging.affinity import AFFINITY_HEADER, affinity_headers, affinity_key
    from nerschat.judging.modes import (
        BestOfTask,
        ClassifyOptions,
        ClassifyTask,
        JudgingOptions,
        PairwiseOptions,
        PairwiseTask,
        ScoreOptions,
        ScoreTask,
        make_task,
        parse_labels,
        parse_scale,
        task_from_dict,
    )

# Loaded on first use, so the workflow core can import `nerschat.judging.budget` without
# importing the modes (which import the core's judge).
_HOMES = {"AFFINITY_HEADER": "affinity", "affinity_headers": "affinity",
          "affinity_key": "affinity"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_HOMES.get(name, 'modes')}")
    return getattr(module, name)


__all__ = [
    "AFFINITY_HEADER",
    "BestOfTask",
    "ClassifyOptions",
    "ClassifyTask",
    "JudgingOptions",
    "PairwiseOptions",
    "PairwiseTask",
    "ScoreOptions",
    "ScoreTask",
    "affinity_headers",
    "affinity_key",
    "make_task",
    "parse_labels",
    "parse_scale",
    "task_from_dict",
]
