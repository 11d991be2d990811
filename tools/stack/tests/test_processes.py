"""Starting, recognising and stopping real child processes through their pid files."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from mailstack_stack.processes import (
    ProcessDirs,
    ProcessRecord,
    ProcessSpec,
    ProcessStartError,
    is_running,
    process_start_ticks,
    read_pid_file,
    running_record,
    start_process,
    stop_components,
    stop_process,
    stop_processes,
    wait_healthy,
)
from mailstack_stack.waiting import eventually

SLEEPER = "import time\nwhile True: time.sleep(0.1)"
STUBBORN = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ignoring TERM', flush=True)\n"
    "while True: time.sleep(0.1)"
)
PARENT_OF_GRANDCHILD = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print(child.pid, flush=True)\n"
    "while True: time.sleep(0.1)"
)


def _spec(name: str, code: str) -> ProcessSpec:
    return ProcessSpec(name=name, argv=(sys.executable, "-c", code))


def _alive(pid: int) -> bool:
    return process_start_ticks(pid) is not None and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "gone"
    return raw[raw.rindex(")") + 2 :].split()[0]


@pytest.fixture
def dirs(tmp_path: Path) -> ProcessDirs:
    return ProcessDirs(tmp_path)


def test_start_records_pid_and_start_time_and_logs_output(dirs: ProcessDirs) -> None:
    record = start_process(
        _spec("talker", "print('hello from child', flush=True)\n" + SLEEPER), dirs
    )
    try:
        assert read_pid_file(dirs.pid_file("talker")) == record
        assert dirs.pid_file("talker").read_text().splitlines()[0] == str(record.pid)
        assert record.start_ticks == process_start_ticks(record.pid)
        assert os.getsid(record.pid) == record.pid  # its own session and process group
        eventually(lambda: "hello from child" in dirs.log_file("talker").read_text(), 5)
        assert running_record("talker", dirs) == record
    finally:
        stop_process(record)


def test_stop_terminates_the_process_and_removes_its_pid_file(dirs: ProcessDirs) -> None:
    record = start_process(_spec("sleeper", SLEEPER), dirs)
    assert stop_components(["sleeper"], dirs, grace=5) == ["sleeper"]
    assert not is_running(record)
    assert not dirs.pid_file("sleeper").exists()
    assert stop_components(["sleeper"], dirs) == []


def test_stop_kills_what_ignores_sigterm_after_the_grace_period(dirs: ProcessDirs) -> None:
    record = start_process(_spec("stubborn", STUBBORN), dirs)
    eventually(lambda: "ignoring TERM" in dirs.log_file("stubborn").read_text(), 5)
    started = time.monotonic()
    assert stop_process(record, grace=0.5)
    assert time.monotonic() - started >= 0.5
    assert not is_running(record)


def test_stop_takes_down_the_whole_process_group(dirs: ProcessDirs) -> None:
    record = start_process(_spec("parent", PARENT_OF_GRANDCHILD), dirs)
    log = dirs.log_file("parent")
    # The log is empty until the parent prints its child's pid.
    eventually(
        lambda: log.read_text().strip().splitlines()[-1].isdigit(), 5, ignoring=(IndexError,)
    )
    grandchild = int(log.read_text().strip().splitlines()[-1])
    assert _alive(grandchild)
    stop_process(record, grace=5)
    eventually(lambda: not _alive(grandchild), 5)


def test_a_reused_pid_is_never_signalled(dirs: ProcessDirs) -> None:
    # A pid file naming a live process that we did not start (other start time): this one.
    me = os.getpid()
    stale = ProcessRecord(pid=me, start_ticks=(process_start_ticks(me) or 0) - 1)
    dirs.pids.mkdir(parents=True)
    dirs.pid_file("ghost").write_text(f"{stale.pid}\n{stale.start_ticks}\n")
    assert not is_running(stale)
    assert running_record("ghost", dirs) is None
    assert stop_components(["ghost"], dirs) == []
    assert _alive(me)


def test_a_process_that_exits_fails_the_health_wait_with_its_log(dirs: ProcessDirs) -> None:
    code = "import sys; print('boom: missing setting', flush=True); sys.exit(3)"
    record = start_process(_spec("crasher", code), dirs)
    with pytest.raises(ProcessStartError, match="crasher exited") as raised:
        wait_healthy("crasher", record, lambda: False, timeout=10, dirs=dirs)
    assert "boom: missing setting" in str(raised.value)
    assert str(dirs.log_file("crasher")) in str(raised.value)


def test_a_process_that_never_gets_healthy_times_out(dirs: ProcessDirs) -> None:
    record = start_process(_spec("sleeper", SLEEPER), dirs)
    try:
        with pytest.raises(ProcessStartError, match="not healthy after"):
            wait_healthy("sleeper", record, lambda: False, timeout=0.5, dirs=dirs)
    finally:
        stop_process(record)


def test_health_from_another_process_does_not_count(dirs: ProcessDirs) -> None:
    record = start_process(_spec("quitter", "pass"), dirs)
    eventually(lambda: not is_running(record), 5)
    # The check passes (say, someone else serves the port) but our process is gone.
    with pytest.raises(ProcessStartError, match="quitter exited"):
        wait_healthy("quitter", record, lambda: True, timeout=5, dirs=dirs)


def test_stopping_several_waits_for_them_together(dirs: ProcessDirs) -> None:
    stubborn = [start_process(_spec(f"stubborn{i}", STUBBORN), dirs) for i in range(3)]
    for i in range(3):
        log = dirs.log_file(f"stubborn{i}")
        eventually(lambda log=log: "ignoring TERM" in log.read_text(), 5)
    started = time.monotonic()
    assert stop_processes(stubborn, grace=1.0) == [True, True, True]
    assert time.monotonic() - started < 2.5  # one grace period, not three
    assert not any(is_running(record) for record in stubborn)
