"""nerschat's work as Parsl apps, for existing pipelines (load your config first).

Each factory binds a plain function to an executor label, following Parsl's advice to keep
the logic in plain functions and make apps at run time:

    from nerschat.parsl.apps import item_shard_app
    futures = [item_shard_app("cpu")(task_spec, shard_in, shard_out, registry)
               for shard_in, shard_out in shards]
"""

from __future__ import annotations

from typing import Any

from nerschat.parsl.config import CLIENT_EXECUTOR, PILOT_EXECUTOR


def _app(function: Any, executor: str) -> Any:
    from parsl import python_app

    return python_app(function, executors=[executor])


def pilot_app(executor: str = PILOT_EXECUTOR) -> Any:
    """Runs one pilot for its block's life: `(pilot_config_dict, registry_path) -> result`."""
    from nerschat.parsl.pilots import run_pilot

    return _app(run_pilot, executor)


def item_shard_app(executor: str = CLIENT_EXECUTOR) -> Any:
    """One judge/run-batch/embed shard: `(task_spec, input, results, registry, timeout, in_flight)`."""
    from nerschat.workflows.core import run_shard

    return _app(run_shard, executor)


def smoke_test_app(executor: str = CLIENT_EXECUTOR) -> Any:
    """A few chat requests through the registry; returns requests per endpoint."""
    from nerschat.parsl.pilots import smoke_test

    return _app(smoke_test, executor)
