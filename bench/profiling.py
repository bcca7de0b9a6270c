"""--py-spy: sample the gunicorn workers under (c), (a) and (e) load; summarise the stacks."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.config import BATCH, BIN, ROOT, log
from bench.context import Bench
from bench.load import LUA_BATCH, LUA_EVENTS, lua_script
from bench.servers import wait_drained
from bench.state_reads import get_paths


def profile_all(bench: Bench) -> dict[str, Any]:
    """Profile the workers under each of (c), (a) and (e) in turn; return the summaries."""
    from bench import seed

    paths = get_paths()
    targets = {
        "c": (paths["c"], bench.get_script),
        "a": (paths["a"], bench.get_script),
        "e": (
            "/api/v1/events/batch/",
            lua_script(
                bench.scripts,
                "e-profile",
                LUA_EVENTS + LUA_BATCH,
                TOKEN=seed.PRODUCER_TOKEN,
                RUN=bench.run,
                PHASE="e",
                BATCH=BATCH,
                BASE=bench.base_now - 1800,
                TAG="p",
            ),
        ),
    }
    profiles: dict[str, Any] = {}
    for key, (path, script) in targets.items():
        log(f"py-spy: profiling the workers under ({key}) load ...")
        profiles[key] = profile_workers(bench, path, script, key)
        wait_drained(bench.gunicorn.children)
    return profiles


def profile_workers(bench: Bench, path: str, script: Path, key: str) -> dict[str, Any]:
    """Sample every gunicorn worker with py-spy while wrk drives `path`; summarise the stacks.

    py-spy leaves out idle threads, but counts a thread blocked in a database call as busy:
    the shares are of the time the workers spend serving requests, PostgreSQL round trips
    included (CursorWrapper._execute).
    """
    seconds = bench.args.duration
    spy = shutil.which("py-spy") or str(BIN / "py-spy")
    if not Path(spy).exists():
        return {"skipped": "py-spy is not installed (.venv/bin/pip install py-spy)"}
    out_dir = ROOT / "var" / "bench-profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{key}.txt"
    record = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(bench.gunicorn.pid),
            "--subprocesses",
            "--nonblocking",
            "--function",
            "--rate",
            "200",
            "--format",
            "raw",
            "--duration",
            str(int(seconds) + 1),
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)
    bench.wrk_run(path, script, seconds=seconds)
    record.wait(timeout=seconds + 30)
    return summarise_stacks(out)


def summarise_stacks(path: Path, top: int = 15) -> dict[str, Any]:
    """Return the hottest functions of a py-spy raw (collapsed) profile: inclusive shares of
    the project's own functions, and the frames the samples were taken in (self time)."""
    if not path.exists():
        return {"skipped": "py-spy wrote no profile"}
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    if not total:
        return {"skipped": "no samples"}

    def share(table: dict[str, int], keep: Callable[[str], bool]) -> list[list[Any]]:
        ranked = sorted(((n, f) for f, n in table.items() if keep(f)), reverse=True)[:top]
        return [[round(100 * n / total, 1), frame] for n, frame in ranked]

    def project(frame: str) -> bool:
        return "/work/" not in frame or "/.venv/" not in frame

    return {
        "samples": total,
        "file": str(path.relative_to(ROOT)),
        "inclusive_pct_project": share(
            inclusive, lambda f: ("twosv/" in f or "crm_plugin/" in f) and project(f)
        ),
        "self_pct": share(own, lambda f: True),
    }
