"""Workflow summaries report GPU-hours used during the run, items per GPU-hour and the rest."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from nerschat.pool import Member, PoolState
from nerschat.pool import state as store
from nerschat.registry import Endpoint, Registry
from nerschat.workflows.core import RunReport, parts_dir
from nerschat.workflows.summary import judge_summary, run_cost


def entry(endpoint_id: str, model: str, started: float, gpus: str | None) -> Endpoint:
    return Endpoint(id=endpoint_id, kind="llm", engine="vllm", model=model,
                    url=f"http://h:1/{endpoint_id}/v1", state="ready", api_key=None, pid=1,
                    host="h", slurm_job_id=None, heartbeat_at=time.time(), ttl=600.0,
                    started_at=started, gpus=gpus)


def test_run_cost_clips_pool_members_and_entries_to_the_run(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    now = time.time()
    run = (now - 7200, now)  # a two-hour run
    members = [  # 4 GPUs from 3 h ago to 1 h ago: 1 h of it in the run
        Member("a", "11", True, now - 4 * 3600, gpus=4, phase="gone",
               started_at=now - 3 * 3600, ended_at=now - 3600),
        Member("b", "12", True, now - 3600, gpus=4, phase="ready", started_at=now - 3600),
    ]
    store.write_state(registry, PoolState("p", "vllm", "hf/llama", 2, 2, 2, now - 4 * 3600,
                                          served_model="llama", members=members))
    registry.publish(entry("b", "llama", now - 3600, "0,1,2,3"))  # a member: counted once
    registry.publish(entry("solo", "llama", now - 1800, "0,1"))  # 0.5 h x 2 GPUs
    registry.publish(entry("other", "mistral", now - 1800, "0"))
    cost = run_cost(registry, "llama", *run)
    assert abs(cost.gpu_hours - (4 + 4 + 1)) < 0.01
    assert abs(cost.replica_hours - 2.5) < 0.01
    assert cost.servers == 3


def test_judge_summary_has_the_cost_rows(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    now = time.time()
    registry.publish(entry("solo", "llama", now - 3600, "0,1"))  # 2 GPU-hours in the run
    output = tmp_path / "out.jsonl"
    output.write_text("".join(json.dumps({"id": str(i), "index": 0}) + "\n" for i in range(90)))
    parts_dir(output).mkdir()
    (parts_dir(output) / "config.json").write_text(json.dumps({"model": "llama"}))
    report = RunReport(total=100, skipped_done=0, invalid=0, processed=90, seconds=3600.0,
                       merged={"written": 90, "errors": 0, "missing": 10}, output=output)
    console = Console(width=200, record=True)
    console.print(judge_summary(report, registry=registry))
    text = console.export_text()
    assert "GPU-hours used" in text and "2.000 (1 server(s), 1.000 job hours)" in text
    (per_gpu_hour,) = [line for line in text.splitlines() if "items per GPU-hour" in line]
    assert "45" in per_gpu_hour.split()  # 90 items in 2 GPU-hours
    assert "GPU-hours for the rest" in text and "0.222 (10 items left)" in text
    no_model = RunReport(total=1, skipped_done=0, invalid=0, processed=1, seconds=1.0,
                         merged={"written": 1, "errors": 0, "missing": 0},
                         output=tmp_path / "x.jsonl")
    (tmp_path / "x.jsonl").write_text('{"id": "1", "index": 0}\n')
    console = Console(width=200, record=True)
    console.print(judge_summary(no_model, registry=registry))
    assert "GPU-hours" not in console.export_text()  # no model known: no guess


def test_cost_text_per_job_hour_without_gpus() -> None:
    from nerschat.workflows.summary import RunCost, cost_text

    assert cost_text(RunCost(0.0, 2.0, 1), 100, 50) == (
        "GPU-hours used 0.000 (1 server(s), 2.000 job hours); items per job hour (no GPUs) 50; "
        "job hours for the rest 1.000 (50 items left)")
    assert cost_text(RunCost(0.0, 0.0, 0), 0, 0) == "GPU-hours used 0.000 (0 server(s), 0.000 job hours)"
