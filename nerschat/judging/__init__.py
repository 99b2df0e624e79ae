"""Judging protocols (best-of, pairwise, score, classify), their statistics and reports.

`make_task(mode, **options)` returns an item task the workflow core runs like `JudgeTask`;
`summarize(lines)` turns an output file's lines into the SUMMARY.json dictionary.
"""

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
