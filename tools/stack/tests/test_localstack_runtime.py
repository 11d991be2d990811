"""LocalStack's pinned runtime on the host: which pin runs, and how it is run."""

from __future__ import annotations

from pathlib import Path

from mailstack_stack import localstack


def test_every_pin_has_a_constraints_file_that_pins_its_version_and_no_file_is_unused(
    repo_root: Path,
) -> None:
    pins = localstack.runtime_pins(repo_root / "localstack")
    for pin in pins:
        assert f"localstack-core=={pin.localstack_version}\n" in pin.constraints.read_text()
    files = set((repo_root / "localstack").glob("host-runtime-*.txt"))
    assert files == {pin.constraints for pin in pins}


def test_runs_the_first_pin_whose_python_is_here_in_an_environment_uv_makes(
    repo_root: Path,
) -> None:
    argv = localstack.runtime_argv(repo_root / "localstack")
    pins = {pin.constraints for pin in localstack.runtime_pins(repo_root / "localstack")}
    assert Path(argv[argv.index("--with-requirements") + 1]) in pins
    assert Path(argv[argv.index("--python") + 1]).is_file()
    assert argv[1:3] == ["run", "--no-project"]
    assert "--no-python-downloads" in argv
    assert argv[-3:] == ["python", "-m", "localstack.runtime.main"]


def test_localstack_listens_on_loopback_only_with_path_style_queue_urls(tmp_path: Path) -> None:
    env = localstack.runtime_env(4999, tmp_path, ("sqs", "s3"))
    assert env["GATEWAY_LISTEN"] == "127.0.0.1:4999"
    assert env["GATEWAY_SERVER"] == "hypercorn"
    assert env["SQS_ENDPOINT_STRATEGY"] == "path"
    assert env["SERVICES"] == "sqs,s3"
    assert env["LOCALSTACK_VOLUME_DIR"] == str(tmp_path)


def test_readiness_needs_every_service_usable() -> None:
    health = {"services": {"sqs": "running", "s3": "available", "lambda": "disabled"}}
    assert localstack.services_listed_ready(health, ["sqs", "s3"])
    assert not localstack.services_listed_ready(health, ["sqs", "lambda"])
    assert not localstack.services_ready("http://127.0.0.1:9", ["sqs"])
