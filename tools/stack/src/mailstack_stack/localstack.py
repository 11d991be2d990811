"""LocalStack on the host: its own cached virtualenv, the process to start it, its readiness."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from mailstack_stack.supervision import Program

# secretsmanager: the infra tests resolve a task's secrets the way ECS does.
DEFAULT_SERVICES: tuple[str, ...] = ("sqs", "s3", "secretsmanager")
READY_STATES = frozenset({"available", "running"})


class LocalStackInstallError(RuntimeError):
    """The LocalStack runtime could not be installed into its virtualenv."""


@dataclass(frozen=True)
class RuntimePin:
    """A LocalStack version known to run on one Python version, with its constraints file."""

    localstack_version: str
    python_tag: str
    constraints: Path


def runtime_pins(localstack_dir: Path) -> list[RuntimePin]:
    """The pinned runtimes in the repo's `localstack/` directory, preferred first."""
    return [
        RuntimePin("4.8.1", "3.11", localstack_dir / "host-runtime-4.8.1-py3.11.txt"),
        RuntimePin("4.14.0", "3.13", localstack_dir / "host-runtime-4.14.0-py3.13.txt"),
    ]


def default_cache_dir() -> Path:
    """`${XDG_CACHE_HOME:-~/.cache}/mailstack`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mailstack"


def _uv() -> str:
    # `uv run` tells its children where it is; else the one on PATH.
    return os.environ.get("UV") or shutil.which("uv") or "uv"


def find_interpreter(pins: Sequence[RuntimePin]) -> tuple[RuntimePin, str]:
    """The first pin whose Python version is installed here (as uv finds it, never fetched)."""
    for pin in pins:
        found = subprocess.run(
            [_uv(), "python", "find", "--system", "--no-python-downloads", pin.python_tag],
            capture_output=True,
            text=True,
            check=False,
        )
        if found.returncode == 0:
            return pin, found.stdout.strip()
    wanted = ", ".join(f"python{pin.python_tag}" for pin in pins)
    raise LocalStackInstallError(f"no interpreter for LocalStack's runtime found: need {wanted}")


def runtime_dir(cache_dir: Path, pin: RuntimePin) -> Path:
    """Where the runtime for `pin` lives: versioned and keyed by the constraints' content."""
    digest = hashlib.sha256(pin.constraints.read_bytes()).hexdigest()[:12]
    return cache_dir / f"localstack-{pin.localstack_version}-py{pin.python_tag}-{digest}"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@contextlib.contextmanager
def _install_lock(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".localstack-install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run_install_step(argv: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise LocalStackInstallError(
            f"LocalStack install step failed (exit {result.returncode}): {' '.join(argv)}; "
            f"see {log}"
        )


def ensure_runtime(
    localstack_dir: Path, cache_dir: Path | None = None, log: Path | None = None
) -> Path:
    """The Python of a virtualenv holding LocalStack's runtime, installed on first use.

    The venv is built in a temporary directory beside its final place and renamed into place
    only when complete, so an interrupted install never leaves a half-built runtime behind.
    """
    cache = cache_dir or default_cache_dir()
    pin, interpreter = find_interpreter(runtime_pins(localstack_dir))
    target = runtime_dir(cache, pin)
    if _venv_python(target).exists():
        return _venv_python(target)
    with _install_lock(cache):
        if _venv_python(target).exists():
            return _venv_python(target)
        install_log = log or cache / f"{target.name}.install.log"
        install_log.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache))
        try:
            _run_install_step(
                [_uv(), "venv", "--quiet", "--seed", "--python", interpreter, str(staging)],
                install_log,
            )
            python = str(_venv_python(staging))
            package = f"localstack-core[runtime]=={pin.localstack_version}"
            install = [_uv(), "pip", "install", "--quiet", "--python", python]
            _run_install_step([*install, "-c", str(pin.constraints), package], install_log)
            _run_install_step([python, "-c", "import localstack.runtime.main"], install_log)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _venv_python(target)


def program(
    python: Path,
    port: int,
    volume_dir: Path,
    services: Sequence[str] = DEFAULT_SERVICES,
    extra_env: Mapping[str, str] | None = None,
) -> Program:
    """How to run LocalStack's runtime on the host, listening on 127.0.0.1:`port` only."""
    env = {
        "SERVICES": ",".join(services),
        "SQS_ENDPOINT_STRATEGY": "path",
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        # The default (twisted) server ignores GATEWAY_LISTEN's host and binds every interface.
        "GATEWAY_SERVER": "hypercorn",
        "LOCALSTACK_HOST": f"127.0.0.1:{port}",
        "LOCALSTACK_VOLUME_DIR": str(volume_dir),
        "EAGER_SERVICE_LOADING": "1",
        # No internet here, and a second LocalStack must not fight over port 53 or phone home.
        "DNS_ADDRESS": "0",
        "SKIP_SSL_CERT_DOWNLOAD": "1",
        "DISABLE_EVENTS": "1",
        **(extra_env or {}),
    }
    argv = (str(python), "-m", "localstack.runtime.main")
    return Program(name="localstack", argv=argv, env=env, cwd=volume_dir, priority=10)


def health_url(endpoint: str) -> str:
    return f"{endpoint.rstrip('/')}/_localstack/health"


def services_ready(endpoint: str, services: Sequence[str], timeout: float = 2.0) -> bool:
    """Whether LocalStack's health endpoint lists every one of `services` as usable."""
    try:
        response = httpx.get(health_url(endpoint), timeout=timeout)
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    states = response.json().get("services", {})
    return all(states.get(service) in READY_STATES for service in services)
