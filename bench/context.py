"""What every figure of one run needs: the options, wrk, the server, the run's id, results."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.load import run_wrk
from bench.servers import Proc, proc_memory


@dataclass
class Bench:
    args: argparse.Namespace
    wrk: str
    port: int
    gunicorn: Proc
    # The run's id: its customers are bench-run-<run>-<phase><thread>.
    run: str
    # The run's start in epoch seconds; ingested events occur relative to it.
    base_now: int
    # Where the run's wrk scripts go.
    scripts: Path
    # The GET figures' script (agent token; a connection per request unless --keepalive).
    get_script: Path
    results: dict[str, Any] = field(default_factory=dict)
    # Peak RSS of the busiest gunicorn worker after each phase, in kB.
    memory_after: dict[str, int] = field(default_factory=dict)

    @property
    def threads(self) -> int:
        """wrk's threads (= connections), and the methods a phase ingests into."""
        return int(self.args.connections)

    def wrk_run(self, path: str, script: Path, seconds: float) -> dict[str, Any]:
        return run_wrk(self.wrk, self.port, path, script, seconds=seconds, connections=self.threads)

    def snapshot(self, label: str) -> None:
        peaks = [proc_memory(pid).get("VmHWM", 0) for pid in self.gunicorn.children()]
        self.memory_after[label] = max(peaks, default=0)
