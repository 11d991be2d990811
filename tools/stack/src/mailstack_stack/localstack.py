"""LocalStack on the host: the command that runs its pinned runtime, and its readiness."""

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import httpx

RUNTIME = "localstack.runtime.main"


class RuntimePin(NamedTuple):
    """A LocalStack version known to run on one Python version, with its constraints file."""

    localstack_version: str
    python_tag: str
    constraints: Path


def runtime_pins(localstack_dir: Path) -> list[RuntimePin]:
    """The pinned runtimes in the repo's `localstack/` directory, preferred first."""
    pins = [("4.8.1", "3.11"), ("4.14.0", "3.13")]
    return [RuntimePin(v, py, localstack_dir / f"host-runtime-{v}-py{py}.txt") for v, py in pins]


def runtime_argv(localstack_dir: Path) -> list[str]:
    """LocalStack run by `uv run --with-requirements <pins>` on the first pin whose Python is
    installed here: uv builds (and caches) the environment; no interpreter is downloaded."""
    # `uv run` tells its children where it is; else the one on PATH.
    uv = os.environ.get("UV") or shutil.which("uv") or "uv"
    pins = runtime_pins(localstack_dir)
    for pin in pins:
        find = [uv, "python", "find", "--system", "--no-python-downloads", pin.python_tag]
        found = subprocess.run(find, capture_output=True, text=True, check=False)
        if found.returncode == 0:
            python = ("--no-python-downloads", "--python", found.stdout.strip())
            pinned = ("--with-requirements", str(pin.constraints))
            return [uv, "run", "--no-project", *python, *pinned, "python", "-m", RUNTIME]
    wanted = ", ".join(f"python{pin.python_tag}" for pin in pins)
    raise FileNotFoundError(f"no interpreter for LocalStack's runtime found: need {wanted}")


def runtime_env(port: int, volume_dir: Path, services: Sequence[str]) -> dict[str, str]:
    """LocalStack's settings: listening on 127.0.0.1:`port` only, path-style queue URLs."""
    return {
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
    }


def services_listed_ready(health: Any, services: Sequence[str]) -> bool:
    """Whether a /_localstack/health document lists every one of `services` as usable."""
    states = health.get("services", {}) if isinstance(health, dict) else {}
    return all(states.get(service) in ("available", "running") for service in services)


def services_ready(endpoint: str, services: Sequence[str]) -> bool:
    """Whether the LocalStack at `endpoint` answers with every one of `services` usable."""
    try:
        response = httpx.get(f"{endpoint.rstrip('/')}/_localstack/health", timeout=2)
        return response.status_code == 200 and services_listed_ready(response.json(), services)
    except (httpx.HTTPError, ValueError):
        return False
