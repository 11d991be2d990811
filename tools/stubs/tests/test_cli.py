"""`python -m mailstack_stubs` serves a stub, logs to stdout and exits cleanly on SIGTERM."""

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from mailstack_stubs.control import StubControl
from mailstack_testing.waiting import eventually

API_KEY = "cli-key"
GENEROUS_S = 15.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class StubProcess:
    process: subprocess.Popen[str]
    base_url: str

    def terminate(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        stdout, _ = self.process.communicate(timeout=GENEROUS_S)
        return self.process.returncode, stdout


def _start(provider: str) -> StubProcess:
    port = _free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "mailstack_stubs", provider),
            *("--host", "127.0.0.1", "--port", str(port), "--api-key", API_KEY),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    stub = StubProcess(process, f"http://127.0.0.1:{port}")

    def health() -> httpx.Response:
        assert process.poll() is None, "the stub process exited at start"
        return httpx.get(f"{stub.base_url}/_stub/health", timeout=1).raise_for_status()

    eventually(health, GENEROUS_S, ignoring=(httpx.TransportError,), what="the stub answering")
    return stub


@pytest.fixture(params=["elasticemail", "sendgrid"])
def stub_process(request: pytest.FixtureRequest) -> Iterator[StubProcess]:
    stub = _start(request.param)
    yield stub
    if stub.process.poll() is None:
        stub.process.kill()
        stub.process.wait()


def _send_path(control: StubControl) -> str:
    if control.health()["provider"] == "elasticemail":
        return "/v4/emails/transactional"
    return "/v3/mail/send"


def test_serves_the_provider_and_logs_each_send_to_stdout(stub_process: StubProcess) -> None:
    with StubControl(stub_process.base_url) as control:
        provider = control.health()["provider"]
        url = stub_process.base_url + _send_path(control)
        assert httpx.post(url, json={}).status_code == 401

    code, stdout = stub_process.terminate()

    assert code == 0
    assert f"stub.send provider={provider} status=401" in stdout


def test_sigterm_answers_a_held_request_and_exits_cleanly(stub_process: StubProcess) -> None:
    with StubControl(stub_process.base_url) as control, ThreadPoolExecutor(1) as pool:
        control.set_behaviour("hang")
        url = stub_process.base_url + _send_path(control)
        held = pool.submit(httpx.post, url, json={}, timeout=GENEROUS_S)
        control.wait_for_held_requests(1, timeout_s=GENEROUS_S)

        code, _ = stub_process.terminate()

        assert held.result(timeout=GENEROUS_S).status_code == 503
    assert code == 0


def test_refuses_an_unknown_provider() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailstack_stubs", "mailgun", "--api-key", "k"],
        capture_output=True,
        text=True,
        timeout=GENEROUS_S,
        check=False,
    )

    assert result.returncode == 2
    assert "invalid choice" in result.stderr
