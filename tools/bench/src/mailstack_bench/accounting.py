"""Where a benchmark's CPU goes: by process of the stack, and by package inside one process.

On one machine the services, Postgres, LocalStack and the stubs share the same cores, so a
rate measured end to end is bounded by the CPU that all of them spend per email, not by the
service under test alone. `CpuLedger` takes the CPU time (user + system) of every process of a
stack, grouped by role, at two moments; `spent` is what each role used in between (a process
that started in between counts whole). `self_time_by_package` reads a py-spy profile.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

# A process: its pid and start time, so a reused pid is another process.
ProcessKey = tuple[int, float]
# Per process: its role and its CPU seconds so far.
Snapshot = dict[ProcessKey, tuple[str, float]]

# Servers the stack uses but does not run as components, found by process name.
SERVERS = {"postgres": "postgres", "redis-server": "redis"}
SUPERVISORD = "supervisord"
BENCH = "bench (this process)"

# Leaf frames where a thread waits rather than works (py-spy samples idle threads too).
_IDLE_FRAMES = ("Condition.wait", "Queue.get", "select (selectors", "poll (selectors")
# Under uvloop the event loop is C code: a sample whose innermost Python frame is the runner
# is the loop waiting in epoll or doing its own I/O, which py-spy cannot tell apart.
_LOOP_LEAF = "Runner.run (asyncio/runners.py"
EVENT_LOOP = "event loop (uvloop's C code: epoll wait or its I/O)"
_PACKAGE = re.compile(r"\(([^:/ ]+)")


@dataclass(frozen=True)
class CpuLedger:
    """The processes to account for: each component's pid (and its descendants, as LocalStack
    runs under a wrapper), the supervisord above them, the machine's Postgres and Redis
    processes (by name: `SERVERS`), and this process."""

    components: Mapping[str, int]

    def snapshot(self) -> Snapshot:
        taken: Snapshot = {}
        for role, process in self._processes():
            try:
                times = process.cpu_times()
                key = (process.pid, process.create_time())
            except psutil.Error:  # it ended in between
                continue
            taken[key] = (role, float(times.user + times.system))
        return taken

    def _processes(self) -> Iterable[tuple[str, psutil.Process]]:
        parents: set[int] = set()
        for role, pid in self.components.items():
            try:
                process = psutil.Process(pid)
                parents.add(process.ppid())
                yield role, process
                for child in process.children(recursive=True):
                    yield role, child
            except psutil.Error:
                continue
        for parent in parents - {os.getpid(), 0, 1}:
            try:
                yield SUPERVISORD, psutil.Process(parent)
            except psutil.Error:
                continue
        for process in psutil.process_iter(["name"]):
            if (server := SERVERS.get(process.info["name"])) is not None:
                yield server, process
        yield BENCH, psutil.Process()


def spent(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds each role used between the snapshots, largest first."""
    used: dict[str, float] = {}
    for key, (role, seconds) in after.items():
        earlier = before.get(key)
        used[role] = used.get(role, 0.0) + seconds - (earlier[1] if earlier else 0.0)
    ranked = sorted(used.items(), key=lambda item: -item[1])
    return {role: round(seconds, 3) for role, seconds in ranked if seconds > 0}


def per_item_ms(used: Mapping[str, float], items: int) -> dict[str, float]:
    """`spent` as milliseconds per item (email, request, message), with a total."""
    shares = {role: round(seconds * 1000 / max(1, items), 3) for role, seconds in used.items()}
    return shares | {"total": round(sum(shares.values()), 3)}


def self_time_by_package(collapsed: Path, count: int = 12) -> list[tuple[str, float]]:
    """From py-spy's collapsed stacks: which package's code was running (the innermost
    frame's), as shares of the samples, leaving out threads that waited (a pool's idle
    workers)."""
    working: Counter[str] = Counter()
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, weight = line.rpartition(" ")
        if not weight.isdigit() or not stack:
            continue
        leaf = stack.rsplit(";", 1)[-1]
        if any(idle in leaf for idle in _IDLE_FRAMES):
            continue
        match = _PACKAGE.search(leaf)
        package = match.group(1).removesuffix(".py") if match else leaf
        working[EVENT_LOOP if leaf.startswith(_LOOP_LEAF) else package] += int(weight)
    total = sum(working.values())
    return [(package, hits / total) for package, hits in working.most_common(count)]
