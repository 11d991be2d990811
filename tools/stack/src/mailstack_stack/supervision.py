"""Host processes under supervisord: one daemon per stack, its programs defined as it grows.

supervisord restarts a component that crashes, stops each with its own grace (SIGTERM to the
process group, SIGKILL after `stopwaitsecs`) in reverse priority order, and appends its output
to `logs/<name>.log`. Each component writes its own pid to `pids/<name>.pid` as it starts.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
import xmlrpc.client
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import Faults, SupervisorTransport
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

# States in which supervisord runs the program or is about to (again).
ACTIVE = frozenset({"RUNNING", "STARTING", "BACKOFF"})
# The component writes its own pid (`$$` is the shell's, which `exec` hands on), so the file
# stays true across the restarts supervisord makes by itself.
_WRITE_PID = 'echo $$ > "$0" && exec "$@"'


class ProcessStartError(RuntimeError):
    """A component exited or never became healthy after being started."""


@dataclass(frozen=True)
class Program:
    """One supervised component: what to run, with which environment, and how to stop it."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    stop_grace: float = 10.0
    stop_signal: str = "TERM"
    # Started in increasing priority, stopped in decreasing priority.
    priority: int = 100
    user: str | None = None
    write_pid: bool = True


def wait_until(check: Callable[[], bool], timeout: float, failure: Callable[[], str]) -> None:
    """Call `check` until it returns True; ProcessStartError(failure()) after `timeout` s.
    An exception from `check` ends the wait at once."""
    try:
        Retrying(
            stop=stop_after_delay(timeout),
            wait=wait_fixed(0.25),
            retry=retry_if_result(lambda ok: not ok),
        )(check)
    except RetryError:
        raise ProcessStartError(failure()) from None


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _ini(value: str) -> str:
    # supervisord expands `%(name)s` in these values.
    return value.replace("%", "%%")


def _environment(env: Mapping[str, str]) -> str:
    for key, value in env.items():
        if '"' in value:
            raise ValueError(f"{key}: supervisord cannot pass a value holding a double quote")
    return ",".join(f'{key}="{_ini(value)}"' for key, value in env.items())


class Supervisor:
    """The supervisord of one state directory, reached over its Unix socket.

    `attached`: run it in the foreground as a child of this process (test stacks: it shares
    the caller's process group, so Ctrl-C stops it too, and its owner shuts it down at the
    end); otherwise it daemonizes and outlives the launcher (`make up`).
    """

    def __init__(self, state_dir: Path, attached: bool = False, python: str = sys.executable):
        self.state_dir = state_dir
        self.attached = attached
        self.python = python
        self.logs = state_dir / "logs"
        self.pids = state_dir / "pids"
        self.programs = state_dir / "supervisor"
        self.conf = self.programs / "supervisord.conf"
        self.socket = state_dir / "supervisor.sock"
        self._daemon: subprocess.Popen[bytes] | None = None

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    @property
    def rpc(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def daemon_state(self) -> str | None:
        """RUNNING, SHUTDOWN (stopping its programs; it answers with a fault then), or None
        when nothing answers on the socket."""
        try:
            return str(self.rpc.getState()["statename"])
        except xmlrpc.client.Fault:
            return "SHUTDOWN"
        except (OSError, xmlrpc.client.Error):
            return None

    def answers(self) -> bool:
        return self.daemon_state() == "RUNNING"

    def ensure_started(self) -> None:
        if self.answers():
            return
        for directory in (self.logs, self.pids, self.programs):
            directory.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            f"[unix_http_server]\nfile={_ini(str(self.socket))}\nchmod=0700\n\n"
            f"[supervisord]\nlogfile={_ini(str(self.logs / 'supervisord.log'))}\n"
            f"pidfile={_ini(str(self.state_dir / 'supervisord.pid'))}\n"
            f"childlogdir={_ini(str(self.logs))}\n\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
            f"[include]\nfiles = {_ini(str(self.programs))}/*.conf\n"
        )
        argv = [self.python, "-m", "supervisor.supervisord", "-c", str(self.conf)]
        if self.attached:
            self._daemon = subprocess.Popen([*argv, "--nodaemon"], stdout=subprocess.DEVNULL)
        else:
            subprocess.run(argv, check=True)
        wait_until(self.answers, 30, lambda: f"supervisord did not answer on {self.socket}")

    def define(self, program: Program) -> None:
        """Add `program`, or replace it (restarting it) when its definition changed."""
        options = {
            "command": _ini(shlex.join(program.argv)),
            "environment": _environment(program.env),
            "directory": _ini(str(program.cwd or self.state_dir)),
            "priority": str(program.priority),
            "autostart": "false",
            # A crash (a signal, a non-zero exit) is restarted; a clean stop is not.
            "autorestart": "unexpected",
            "exitcodes": "0",
            "startsecs": "1",
            "stopsignal": program.stop_signal,
            "stopwaitsecs": str(int(program.stop_grace)),
            "stopasgroup": "true",
            "killasgroup": "true",
            "redirect_stderr": "true",
            "stdout_logfile": _ini(str(self.log_file(program.name))),
            "stdout_logfile_maxbytes": "0",
        }
        if program.write_pid:
            pid_file = str(self.pid_file(program.name))
            options["command"] = _ini(shlex.join(["/bin/sh", "-c", _WRITE_PID, pid_file]))
            options["command"] += " " + _ini(shlex.join(program.argv))
        if program.user:
            options["user"] = program.user
        text = f"[program:{program.name}]\n" + "".join(f"{k}={v}\n" for k, v in options.items())
        path = self.programs / f"{program.name}.conf"
        if path.is_file() and path.read_text() == text and self.state(program.name) != "UNKNOWN":
            return
        path.write_text(text)
        [[added, changed, _]] = self.rpc.reloadConfig()
        if program.name in changed:
            with contextlib.suppress(xmlrpc.client.Fault):
                self.rpc.stopProcess(program.name)
            self.rpc.removeProcessGroup(program.name)
        if program.name in added or program.name in changed:
            self.rpc.addProcessGroup(program.name)

    def info(self, name: str) -> dict[str, Any]:
        try:
            info: dict[str, Any] = self.rpc.getProcessInfo(name)
        except (OSError, xmlrpc.client.Error):
            return {"statename": "UNKNOWN", "pid": 0}
        return info

    def state(self, name: str) -> str:
        return str(self.info(name)["statename"])

    def pid(self, name: str) -> int | None:
        info = self.info(name)
        return int(info["pid"]) if info["statename"] == "RUNNING" else None

    def start(self, name: str) -> None:
        try:
            self.rpc.startProcess(name)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != Faults.ALREADY_STARTED:
                log = self.log_file(name)
                raise ProcessStartError(
                    f"{name} did not start ({fault.faultString}); see {log}:\n{log_tail(log)}"
                ) from None

    def stop(self, name: str) -> bool:
        """Stop `name` (its own grace, then SIGKILL); False if it was not running."""
        if self.state(name) not in ACTIVE:
            return False
        with contextlib.suppress(xmlrpc.client.Fault):
            self.rpc.stopProcess(name)
        self.pid_file(name).unlink(missing_ok=True)
        return True

    def run(self, program: Program, healthy: Callable[[], bool], timeout: float) -> None:
        """Define `program`, start it unless it runs, and wait until it runs and is healthy."""
        self.define(program)
        if self.state(program.name) not in ACTIVE:
            self.start(program.name)
        self.wait_healthy(program.name, healthy, timeout)

    def wait_healthy(self, name: str, healthy: Callable[[], bool], timeout: float) -> None:
        log = self.log_file(name)

        def ready() -> bool:
            state = self.state(name)
            if state in ("FATAL", "STOPPED", "UNKNOWN"):
                raise ProcessStartError(f"{name} is {state}; see {log}:\n{log_tail(log)}")
            return state == "RUNNING" and healthy()

        wait_until(
            ready,
            timeout,
            lambda: f"{name} not healthy after {timeout:.0f}s; see {log}:\n" + log_tail(log),
        )

    def shutdown(self, timeout: float = 120) -> list[str]:
        """Stop every program (reverse priority order, each with its grace) and supervisord;
        return the names of those that were running."""
        try:
            running = [p["name"] for p in self.rpc.getAllProcessInfo() if p["statename"] in ACTIVE]
            self.rpc.shutdown()
        except (OSError, xmlrpc.client.Error):
            running = []
        else:
            gone = lambda: self.daemon_state() is None  # noqa: E731
            wait_until(gone, timeout, lambda: f"supervisord on {self.socket} did not stop")
        if self._daemon is not None:
            self._daemon.wait()
        for pid_file in self.pids.glob("*.pid"):
            pid_file.unlink()
        return running

    @contextlib.contextmanager
    def running(self) -> Iterator[Supervisor]:
        """An attached supervisord for the duration of the block (test fixtures)."""
        self.ensure_started()
        try:
            yield self
        finally:
            self.shutdown()
