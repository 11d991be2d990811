"""LocalStack's own cached runtime: where it lives, and that a failed install leaves nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mailstack_stack import localstack


@pytest.fixture
def pins_dir(tmp_path: Path, repo_root: Path) -> Path:
    target = tmp_path / "localstack"
    shutil.copytree(repo_root / "localstack", target, ignore=shutil.ignore_patterns("*.py"))
    return target


def test_every_pin_has_a_constraints_file_that_pins_its_version_and_no_file_is_unused(
    repo_root: Path,
) -> None:
    pins = localstack.runtime_pins(repo_root / "localstack")
    for pin in pins:
        assert f"localstack-core=={pin.localstack_version}\n" in pin.constraints.read_text()
    files = set((repo_root / "localstack").glob("host-runtime-*.txt"))
    assert files == {pin.constraints for pin in pins}


def test_the_cache_key_changes_with_the_constraints(pins_dir: Path, tmp_path: Path) -> None:
    pin = localstack.runtime_pins(pins_dir)[0]
    before = localstack.runtime_dir(tmp_path / "cache", pin)
    assert before.name.startswith("localstack-4.8.1-py3.11-")
    pin.constraints.write_text(pin.constraints.read_text() + "six==1.16.0\n")
    assert localstack.runtime_dir(tmp_path / "cache", pin) != before


@pytest.mark.integration
def test_the_installed_runtime_is_reused(repo_root: Path, localstack_endpoint: str) -> None:
    # The session's LocalStack installed (or found) the runtime in the default cache.
    python = localstack.ensure_runtime(repo_root / "localstack")
    pin, _ = localstack.find_interpreter(localstack.runtime_pins(repo_root / "localstack"))
    assert python == localstack.runtime_dir(localstack.default_cache_dir(), pin) / "bin" / "python"
    assert localstack.ensure_runtime(repo_root / "localstack") == python


@pytest.mark.integration
def test_a_failed_install_leaves_no_half_built_runtime(pins_dir: Path, tmp_path: Path) -> None:
    pin = localstack.runtime_pins(pins_dir)[0]
    # A constraint that contradicts the requested version: pip must refuse.
    pin.constraints.write_text("localstack-core==0.0.1\n")
    cache = tmp_path / "cache"
    with pytest.raises(localstack.LocalStackInstallError, match="see "):
        localstack.ensure_runtime(pins_dir, cache_dir=cache)
    assert not localstack.runtime_dir(cache, pin).exists()
    leftovers = [p.name for p in cache.iterdir() if not p.name.endswith((".log", ".lock"))]
    assert leftovers == []


def test_localstack_listens_on_loopback_only_with_path_style_queue_urls(tmp_path: Path) -> None:
    spec = localstack.program(Path("/venv/bin/python"), 4999, tmp_path, ("sqs", "s3"))
    assert spec.argv == ("/venv/bin/python", "-m", "localstack.runtime.main")
    assert spec.env["GATEWAY_LISTEN"] == "127.0.0.1:4999"
    assert spec.env["GATEWAY_SERVER"] == "hypercorn"
    assert spec.env["SQS_ENDPOINT_STRATEGY"] == "path"
    assert spec.env["SERVICES"] == "sqs,s3"
    assert spec.env["LOCALSTACK_VOLUME_DIR"] == str(tmp_path)
