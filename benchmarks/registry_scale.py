"""File-system cost of reading the registry at cluster scale, before and after `RegistryView`.

A registry with ENTRIES endpoints whose pilots renew their heartbeat every ttl/3, and
CLIENTS client processes refreshing for DURATION seconds. Every file-system call a client
makes on the registry is counted by an instrumented layer (wrappers around `os.stat`,
`os.lstat`, `os.fstat`, `os.open`, `os.close`, `os.scandir`, `os.listdir`, `os.utime` and, for
the pilots, `os.fchmod`, `os.replace`, `os.unlink` (a file object's own close is not seen), counted
only for paths under the registry and the file descriptors opened there; a listing counts as
3 calls: open, getdents, close). Metadata operations are everything but `read`.

- before: the old client loop (list the directory and read every entry every 2 s, as
  `EndpointPool.refresh()` did with `Registry.scan()`), with the old heartbeat (rewrite and
  rename the entry);
- after: `EndpointPool` on a `RegistryView` (one stat per refresh when nothing changed), with
  in-place heartbeats (`Registry.heartbeat`), and simulated requests (acquire / release, with
  the transport's fail-over: a failed attempt is released as failed and the pool refreshed).

During the after run one endpoint is stopped (its entry removed, as its pilot does when the
server dies or drains), one crashes (pilot and server gone, entry left behind, heartbeat
stops), and a new one registers (`starting`, then `ready`). Reported: attempts on each
after its death, and how long the new one waited for its first request. Optionally
`--strace` attaches `strace -c -f` to one client of each run as a cross-check.

    python benchmarks/registry_scale.py [--entries 400] [--clients 64] [--duration 60]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nerschat.client.routing import EndpointPool, NoEndpointAvailable
from nerschat.registry import ENTRY_SUFFIX, Endpoint, Registry

REFRESH_INTERVAL = 2.0  # EndpointPool's default, and the old loop's
TTL = 30.0
STOPPED, CRASHED, NEW = "stopped-endpoint", "crashed-endpoint", "new-endpoint"
READ_OPS = {"read"}


# -- the instrumented layer -------------------------------------------------------------

def install_counter(root: str) -> Counter[str]:
    """Wrap os.* so that calls on `root` (and fds opened there) are counted."""
    counts: Counter[str] = Counter()
    fds: set[int] = set()

    def inside(path: Any) -> bool:
        return isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(root)

    def by_path(name: str, real: Callable[..., Any], weight: int = 1) -> Callable[..., Any]:
        def call(path: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(path, int):
                if path in fds:
                    counts[name] += weight
            elif inside(path):
                counts[name] += weight
            return real(path, *args, **kwargs)
        return call

    real_open, real_close, real_read = os.open, os.close, os.read

    def counted_open(path: Any, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, *args, **kwargs)
        if inside(path):
            counts["open"] += 1
            fds.add(fd)
        return fd

    def counted_close(fd: int) -> None:
        if fd in fds:
            counts["close"] += 1
            fds.discard(fd)
        real_close(fd)

    def counted_read(fd: int, n: int) -> bytes:
        if fd in fds:
            counts["read"] += 1
        return real_read(fd, n)

    os.open, os.close, os.read = counted_open, counted_close, counted_read  # type: ignore[assignment]
    for name in ("stat", "lstat", "fstat", "utime", "fchmod", "replace", "rename", "unlink"):
        setattr(os, name, by_path(name, getattr(os, name)))
    os.scandir = by_path("scandir", os.scandir, 3)  # type: ignore[assignment]
    os.listdir = by_path("listdir", os.listdir, 3)  # type: ignore[assignment]
    return counts


def metadata(counts: Counter[str]) -> int:
    return sum(v for k, v in counts.items() if k not in READ_OPS)


# -- pilots: entries and heartbeats -----------------------------------------------------

def endpoint(i: int | str, state: str = "ready") -> Endpoint:
    now = time.time()
    name = i if isinstance(i, str) else f"m{i % 8}.node{i:04d}.{9000 + i}"
    return Endpoint(id=name, kind="llm", engine="stub", model="m0" if isinstance(i, str) else
                    f"m{i % 8}", url=f"http://127.0.0.1:{9000 + hash(name) % 1000}/v1",
                    state=state,  # type: ignore[arg-type]
                    api_key="k", pid=1000, host="127.0.0.1", slurm_job_id=None,
                    heartbeat_at=now, ttl=TTL, started_at=now, ready_at=now)


def old_publish(registry: Registry, entry: Endpoint) -> None:
    """The pilots' old heartbeat: rewrite the whole entry (temporary file + rename)."""
    registry._write_atomic(registry.entry_path(entry.id),
                           json.dumps(entry.to_dict(), indent=1, sort_keys=True).encode())


def pilots_main(path: str, mode: str, entries: int, start: Any, published: Any,
                plan: dict[str, float], out: mp.Queue) -> None:  # type: ignore[type-arg]
    """All pilots in one process: heartbeats every ttl/3, plus the planned events."""
    registry = Registry(path)
    counts = install_counter(path)
    live = [endpoint(i) for i in range(entries - 2)] + [endpoint(STOPPED), endpoint(CRASHED)]
    for e in live:
        registry.publish(e)
    published.set()
    while start.value == 0.0:
        time.sleep(0.01)
    t0 = start.value
    counts.clear()
    beats = 0
    beat: Callable[[Endpoint], None] = (
        registry.heartbeat if mode == "after" else (lambda e: old_publish(registry, e)))
    interval = TTL / 3  # the pilot's default heartbeat interval
    new: Endpoint | None = None
    done: set[str] = set()
    turn = 0
    while time.time() < t0 + plan["end"]:
        now = time.time() - t0
        if mode == "after":
            if now >= plan["death"] and "death" not in done:
                done.add("death")
                registry.remove(STOPPED)  # what a pilot does when its server dies or drains
                live = [e for e in live if e.id not in (STOPPED, CRASHED)]  # CRASHED: silent
            if now >= plan["new_starting"] and "starting" not in done:
                done.add("starting")
                new = endpoint(NEW, "starting")
                registry.publish(new)
                live.append(new)
            if now >= plan["new_ready"] and "ready" not in done and new is not None:
                done.add("ready")
                new.state = "ready"
                registry.heartbeat(new)  # the state changed: a full, atomic publish
        beat(live[turn % len(live)])
        beats += 1
        turn += 1
        time.sleep(interval / len(live))
    out.put({"role": "pilots", "beats": beats, "counts": dict(counts)})


# -- clients ----------------------------------------------------------------------------

def old_scan(path: str) -> list[dict[str, Any]]:
    """The old client loop body: list the directory, read and decode every entry."""
    found = []
    for name in sorted(os.listdir(path)):
        if not name.endswith(ENTRY_SUFFIX) or name.startswith("."):
            continue
        full = os.path.join(path, name)
        try:
            fd = os.open(full, os.O_RDONLY)  # what open(path, "rb") does: open, fstat, read, close
        except FileNotFoundError:
            continue
        try:
            os.fstat(fd)
            raw = os.read(fd, 1 << 20)
        finally:
            os.close(fd)
        with contextlib.suppress(ValueError):
            found.append(json.loads(raw))
    return found


def client_main(path: str, mode: str, index: int, t0: float, plan: dict[str, float],
                rate: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    counts = install_counter(path)
    while time.time() < t0:
        time.sleep(0.01)
    marks = {name: plan[name] for name in ("quiet_from", "death", "end")}
    at_mark: dict[str, tuple[float, int]] = {}  # when (s after t0) and the count so far

    def sample(now: float) -> None:
        for name, offset in marks.items():
            if name not in at_mark and now >= t0 + offset:
                at_mark[name] = (now - t0, metadata(counts))

    attempts: list[tuple[float, str, bool]] = []
    left: dict[str, float] = {}  # seconds after its death an endpoint left this client's pool
    refreshes = 0
    if mode == "before":
        next_refresh = t0
        while time.time() < t0 + plan["end"]:
            now = time.time()
            sample(now)
            if now >= next_refresh:
                old_scan(path)
                refreshes += 1
                next_refresh += REFRESH_INTERVAL
            time.sleep(max(0.0, min(next_refresh, now + 0.05) - time.time()))
    else:
        registry = Registry(path)
        pool = EndpointPool(registry, refresh_interval=REFRESH_INTERVAL)
        scans_before = registry.scans
        dead = {STOPPED: t0 + plan["death"], CRASHED: t0 + plan["death"]}
        period = 1.0 / rate
        next_request = t0
        while time.time() < t0 + plan["end"]:
            now = time.time()
            sample(now)
            if now >= dead[STOPPED] and len(left) < 2:
                present = {load.id for load in pool.loads()}
                for name in (STOPPED, CRASHED):
                    if name not in present:
                        left.setdefault(name, now - dead[name])
            for _ in range(3):  # the transport's fail-over attempts
                try:
                    load = pool.acquire()
                except NoEndpointAvailable:
                    break
                failed = load.id in dead and now >= dead[load.id]
                if load.id in (STOPPED, CRASHED, NEW):
                    attempts.append((now - t0, load.id, not failed))
                pool.release(load, ok=not failed)
                if not failed:
                    break
                pool.refresh(force=True)
            next_request += period
            time.sleep(max(0.0, next_request - time.time()))
        refreshes = registry.scans - scans_before
    at_mark.setdefault("end", (time.time() - t0, metadata(counts)))
    out.put({"role": "client", "index": index, "at_mark": at_mark,
             "counts": dict(counts), "attempts": attempts, "refreshes": refreshes,
             "left": left})


# -- the run ----------------------------------------------------------------------------

def strace_client(pid: int, seconds: float, log: Path) -> subprocess.Popen[bytes] | None:
    if not shutil.which("strace"):
        return None
    return subprocess.Popen(["timeout", "-s", "INT", str(seconds), "strace", "-c", "-f",
                             "-e", "trace=%file,%desc,getdents64", "-o", str(log),
                             "-p", str(pid)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def run(mode: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    path = str(tmp / f"registry-{mode}")
    Registry(path).ensure()
    plan = {"end": args.duration, "death": args.duration * 0.6,
            "new_starting": args.duration * 0.7, "new_ready": args.duration * 0.75,
            "quiet_from": min(15.0, args.duration * 0.25)}
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    start, published = ctx.Value("d", 0.0), ctx.Event()
    pilots = ctx.Process(target=pilots_main,
                         args=(path, mode, args.entries, start, published, plan, out))
    pilots.start()
    published.wait(600)  # every entry written before the clients start
    t0 = time.time() + 2.0 + args.clients * 0.02
    start.value = t0
    clients = [ctx.Process(target=client_main, args=(path, mode, i, t0, plan, args.rate, out))
               for i in range(args.clients)]
    for c in clients:
        c.start()
    tracer = None
    if args.strace:
        time.sleep(max(0.0, t0 + plan["quiet_from"] - time.time()))
        tracer = strace_client(clients[0].pid or 0, plan["death"] - plan["quiet_from"] - 1,
                               tmp / f"strace-{mode}.txt")
    results = [out.get(timeout=args.duration + 300) for _ in range(args.clients + 1)]
    for p in [pilots, *clients]:
        p.join(30)
    if tracer is not None:
        tracer.wait(30)
    client_results = [r for r in results if r["role"] == "client"]
    pilot_result = next(r for r in results if r["role"] == "pilots")
    return {"mode": mode, "plan": plan, "clients": client_results, "pilots": pilot_result,
            "strace": (tmp / f"strace-{mode}.txt").read_text()
            if (tmp / f"strace-{mode}.txt").exists() else None}


def per_minute(client: dict[str, Any], start: str, end: str) -> float:
    """Metadata ops per minute between two marks, over the time actually between them."""
    (t_start, n_start), (t_end, n_end) = client["at_mark"][start], client["at_mark"][end]
    return (n_end - n_start) / max(t_end - t_start, 1e-9) * 60.0


def report(result: dict[str, Any], entries: int) -> dict[str, float]:
    plan = result["plan"]
    clients = result["clients"]
    quiet = [per_minute(c, "quiet_from", "death") for c in clients]
    whole = [per_minute(c, "quiet_from", "end") for c in clients]
    total = sum(sum(c["counts"].values()) for c in clients) / len(clients)
    quiet_mean = sum(quiet) / len(quiet)
    print(f"\n== {result['mode']}: {entries} entries, {len(clients)} clients, "
          f"{plan['end']:.0f} s")
    print(f"  metadata ops per client per minute, nothing changing "
          f"({plan['quiet_from']:.0f}-{plan['death']:.0f} s): mean {quiet_mean:,.1f}, "
          f"max {max(quiet):,.1f}")
    print(f"  metadata ops per client per minute, whole run after start-up "
          f"(incl. the events): mean {sum(whole) / len(whole):,.1f}")
    print(f"  all calls per client (incl. start-up and reads): {total:,.0f}; by call: "
          f"{dict(sum((Counter(c['counts']) for c in clients), Counter()))}")
    refreshes = sum(c["refreshes"] for c in clients) / len(clients)
    print(f"  directory listings per client: {refreshes:.1f}")
    pilots = result["pilots"]
    beats = max(1, pilots["beats"])
    print(f"  pilots: {pilots['beats']} heartbeats, {metadata(Counter(pilots['counts'])) / beats:.1f}"
          f" metadata ops per heartbeat ({pilots['counts']})")
    if result["strace"]:
        print("  strace -c of client 0 during the quiet window:")
        for line in result["strace"].splitlines():
            if line.strip() and not line.startswith("strace"):
                print("    " + line)
    return {"quiet": quiet_mean}


def report_events(result: dict[str, Any]) -> None:
    plan = result["plan"]
    death, ready = plan["death"], plan["new_ready"]
    attempts = [a for c in result["clients"] for a in c["attempts"]]
    for name, what in ((STOPPED, "stopped (entry removed)"),
                       (CRASHED, "crashed (entry left, heartbeat stops)")):
        after = [t - death for t, i, _ in attempts if i == name and t >= death]
        late = [t for t in after if t > 5.0]
        last = max(after) if after else 0.0
        first_try = [t for t in after if t <= 5.0]
        gone = [c["left"][name] for c in result["clients"] if name in c["left"]]
        out_of_pool = (f"out of all {len(gone)} clients' pools after {max(gone):.1f} s"
                       if len(gone) == len(result["clients"]) else
                       f"out of {len(gone)} of {len(result['clients'])} clients' pools "
                       f"by the end (the others cool it down until its ttl, {TTL:.0f} s)")
        print(f"  {what}: {len(after)} failed attempts after its death (each failed over), "
              f"{len(first_try)} within 5 s, {len(late)} later (cool-down probes), the last "
              f"at +{last:.1f} s; {out_of_pool}")
    firsts = []
    for c in result["clients"]:
        seen = [t for t, i, ok in c["attempts"] if i == NEW and ok and t >= ready]
        if seen:
            firsts.append(min(seen) - ready)
    if firsts:
        print(f"  new endpoint: first request {min(firsts):.1f} s (fastest client) / "
              f"{max(firsts):.1f} s (slowest of {len(firsts)} clients) after it became ready")
    else:
        print("  new endpoint: no client sent it a request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=400)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s per client (after)")
    parser.add_argument("--strace", action="store_true",
                        help="also strace -c one client per run (quiet window)")
    parser.add_argument("--only", choices=["before", "after"], default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="registry-scale-") as tmp:
        numbers = {}
        for mode in ("before", "after"):
            if args.only and mode != args.only:
                continue
            result = run(mode, args, Path(tmp))
            numbers[mode] = report(result, args.entries)
            if mode == "after":
                report_events(result)
        if len(numbers) == 2:
            ratio = numbers["before"]["quiet"] / max(numbers["after"]["quiet"], 1e-9)
            print(f"\nbefore/after metadata ops per client per minute (nothing changing): "
                  f"{numbers['before']['quiet']:,.0f} / {numbers['after']['quiet']:,.1f} "
                  f"= {ratio:,.0f}x fewer (goal: after <= 30)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
