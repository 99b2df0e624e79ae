"""The former home of `run_items` and `ShardRunner`; both live in `nerschat.workflows.core`."""

from nerschat.workflows.core import AmbiguousModel, RunReport, ShardRunner, only_model, run_items

__all__ = ["AmbiguousModel", "RunReport", "ShardRunner", "only_model", "run_items"]
