"""CPU by process and profile shares (mailstack_bench.accounting), on real processes."""

import os
import subprocess
import sys
from pathlib import Path

import psutil

from mailstack_bench.accounting import (
    BENCH,
    EVENT_LOOP,
    CpuLedger,
    per_item_ms,
    self_time_by_package,
    spent,
)
from mailstack_testing.waiting import eventually

BUSY = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def test_a_components_cpu_is_charged_to_it_with_its_children() -> None:
    # A component whose work runs in a child (as LocalStack's runs under its wrapper).
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BUSY!r}]); input()",
        ],
        stdin=subprocess.PIPE,
    )
    try:
        ledger = CpuLedger({"worker": parent.pid})
        before = ledger.snapshot()
        child = eventually(
            lambda: psutil.Process(parent.pid).children(), 30, what="the worker's child"
        )[0]
        eventually(
            lambda: sum(child.cpu_times()[:2]),
            30,
            until=lambda cpu: cpu >= 0.25,
            what="the child's 0.3 s of CPU",
        )
        used = spent(before, ledger.snapshot())
    finally:
        parent.kill()
        parent.wait()
    assert 0.25 <= used["worker"] < 2.0


def test_a_process_started_between_snapshots_counts_whole() -> None:
    before = {(1, 0.0): ("processor", 5.0), (2, 0.0): ("postgres", 1.0)}
    after = {
        (1, 0.0): ("processor", 5.5),
        (2, 0.0): ("postgres", 1.0),  # idle: left out
        (3, 9.0): ("postgres", 0.25),  # a new backend
        (1, 7.0): ("processor", 0.75),  # pid 1 reused by a restarted processor
    }
    used = spent(before, after)
    assert used == {"processor": 1.25, "postgres": 0.25}
    assert list(used) == ["processor", "postgres"]
    assert per_item_ms(used, 500) == {"processor": 2.5, "postgres": 0.5, "total": 3.0}


def test_the_ledger_finds_the_supervisor_above_a_component_and_this_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    try:
        roles = {role for role, _ in CpuLedger({"gateway": child.pid}).snapshot().values()}
    finally:
        child.kill()
        child.wait()
    # The child's parent is this process, which is the bench itself, not a supervisor.
    assert {"gateway", BENCH} <= roles
    assert "supervisord" not in roles
    assert os.getpid() in {key[0] for key in CpuLedger({}).snapshot()}


def test_profile_shares_leave_out_waiting_threads_and_name_the_event_loop(tmp_path: Path) -> None:
    collapsed = tmp_path / "profile.txt"
    collapsed.write_text(
        "main (app.py:1);execute (psycopg/cursor.py:10) 6\n"
        "main (app.py:1);Runner.run (asyncio/runners.py:118) 2\n"
        "main (app.py:1);dumps (json/encoder.py:5) 2\n"
        "Thread.run (threading.py:982);Condition.wait (threading.py:327) 90\n"
    )
    assert self_time_by_package(collapsed) == [
        ("psycopg", 0.6),
        (EVENT_LOOP, 0.2),
        ("json", 0.2),
    ]
