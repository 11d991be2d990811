"""Host processes of the stack: start detached with logs and pid files, check, stop by group."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HealthCheck = Callable[[], bool]


class ProcessStartError(RuntimeError):
    """A component exited or never became healthy after being started."""


@dataclass(frozen=True)
class ProcessSpec:
    """What to run for one component: its argv, extra environment and working directory."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    # For test stacks: the kernel sends SIGTERM when the process that started it dies, so an
    # interrupted test run leaves nothing behind. `make up`'s stack must outlive the launcher.
    die_with_parent: bool = False


@dataclass(frozen=True)
class ProcessRecord:
    """A process we started: its pid and its kernel start time, which tells pid reuse apart."""

    pid: int
    start_ticks: int


class ProcessDirs:
    """The `logs/` and `pids/` directories of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.logs = state_dir / "logs"
        self.pids = state_dir / "pids"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.pids / f"{name}.pid"


def _proc_stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or parentheses.
    return raw[raw.rindex(")") + 2 :].split()


def process_start_ticks(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot, or None if there is no such process."""
    fields = _proc_stat_fields(pid)
    # After the command name: state is field 3, starttime is field 22.
    return int(fields[22 - 3]) if fields else None


def _is_zombie(pid: int) -> bool:
    fields = _proc_stat_fields(pid)
    return fields is not None and fields[0] == "Z"


def read_pid_file(path: Path) -> ProcessRecord | None:
    """The record in a pid file: the pid on line 1, its start time in ticks on line 2."""
    try:
        lines = path.read_text().split()
        return ProcessRecord(pid=int(lines[0]), start_ticks=int(lines[1]))
    except (FileNotFoundError, IndexError, ValueError):
        return None


def write_pid_file(path: Path, record: ProcessRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pid.tmp")
    tmp.write_text(f"{record.pid}\n{record.start_ticks}\n")
    tmp.replace(path)


def is_running(record: ProcessRecord) -> bool:
    """Whether the process in `record` still exists and is the one we started (not a reused pid)."""
    ticks = process_start_ticks(record.pid)
    return ticks == record.start_ticks and not _is_zombie(record.pid)


_PR_SET_PDEATHSIG = 1


def _terminate_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_process(spec: ProcessSpec, dirs: ProcessDirs) -> ProcessRecord:
    """Start `spec` in its own session, output appended to its log, and record its pid."""
    dirs.logs.mkdir(parents=True, exist_ok=True)
    log_path = dirs.log_file(spec.name)
    env = {**os.environ, **spec.env}
    with log_path.open("ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} start {spec.name}\n".encode())
        log.flush()
        child = subprocess.Popen(
            spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=spec.cwd,
            start_new_session=True,
            preexec_fn=_terminate_with_parent if spec.die_with_parent else None,
        )
    ticks = process_start_ticks(child.pid)
    if ticks is None:
        code = child.wait()
        raise ProcessStartError(f"{spec.name} exited at once with code {code}; see {log_path}")
    record = ProcessRecord(pid=child.pid, start_ticks=ticks)
    write_pid_file(dirs.pid_file(spec.name), record)
    # The Popen object is dropped on purpose: the process outlives this one (`make up`).
    # Reap it if it dies while we are still alive, so it never lingers as a zombie here.
    _adopt(child)
    return record


_children: list[subprocess.Popen[bytes]] = []


def _adopt(child: subprocess.Popen[bytes]) -> None:
    _children[:] = [c for c in _children if c.poll() is None]
    _children.append(child)


def _reap(pid: int) -> None:
    for child in _children:
        if child.pid == pid:
            child.poll()


def _session_members(record: ProcessRecord) -> list[int]:
    """Pids in the session our process leads (its children too), started no earlier than it."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat_fields(int(entry.name))
        # Field 6 is the session id, field 22 the start time.
        if (
            fields
            and int(fields[6 - 3]) == record.pid
            and int(fields[22 - 3]) >= record.start_ticks
        ):
            members.append(int(entry.name))
    return members


def _signal_session(record: ProcessRecord, sig: signal.Signals) -> None:
    targets = [record.pid] if is_running(record) else []
    targets += [pid for pid in _session_members(record) if pid != record.pid]
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _gone(record: ProcessRecord) -> bool:
    _reap(record.pid)
    return not is_running(record) and not _session_members(record)


def _wait_gone(records: Sequence[ProcessRecord], timeout: float) -> list[ProcessRecord]:
    """Wait until all of `records` are gone or `timeout` passes; return those still there."""
    deadline = time.monotonic() + timeout
    left = [record for record in records if not _gone(record)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [record for record in left if not _gone(record)]
    return left


def stop_processes(records: Sequence[ProcessRecord], grace: float = 10.0) -> list[bool]:
    """SIGTERM each process and the rest of its session together, wait up to `grace` s for
    all of them, then SIGKILL what is left.

    Per record: False if there was nothing of ours left to stop. A pid that now belongs to
    another process (reused after ours died) is never signalled.
    """
    present = [not _gone(record) for record in records]
    live = [record for record, there in zip(records, present, strict=True) if there]
    for record in live:
        _signal_session(record, signal.SIGTERM)
    for record in _wait_gone(live, grace):
        _signal_session(record, signal.SIGKILL)
    _wait_gone(live, 5.0)
    return present


def stop_process(record: ProcessRecord, grace: float = 10.0) -> bool:
    """Stop one process and its session: SIGTERM, then SIGKILL after `grace` s."""
    return stop_processes([record], grace)[0]


def stop_components(names: Sequence[str], dirs: ProcessDirs, grace: float = 10.0) -> list[str]:
    """Stop the components whose pid files are in `dirs`, together; remove their pid files.

    Returns the names of those that were still running.
    """
    found = {name: read_pid_file(dirs.pid_file(name)) for name in names}
    records = {name: record for name, record in found.items() if record is not None}
    stopped = stop_processes(list(records.values()), grace)
    for name in found:
        dirs.pid_file(name).unlink(missing_ok=True)
    return [name for name, was_running in zip(records, stopped, strict=True) if was_running]


def running_record(name: str, dirs: ProcessDirs) -> ProcessRecord | None:
    """The record of `name` if its pid file names a live process that we started."""
    record = read_pid_file(dirs.pid_file(name))
    return record if record is not None and is_running(record) else None


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def wait_healthy(
    name: str,
    record: ProcessRecord,
    check: HealthCheck,
    timeout: float,
    dirs: ProcessDirs,
) -> None:
    """Wait until `check` passes; fail fast if the process dies, and point at its log."""
    log_path = dirs.log_file(name)
    deadline = time.monotonic() + timeout
    while True:
        # Alive and healthy: a foreign process answering on the same port must not count.
        if check() and is_running(record):
            return
        _reap(record.pid)
        if not is_running(record):
            raise ProcessStartError(
                f"{name} exited before becoming healthy; see {log_path}:\n{log_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise ProcessStartError(
                f"{name} not healthy after {timeout:.0f}s; see {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(0.25)
