"""Nothing the repository runs reads a path outside it: a new user's clone has nothing beside it."""

import os
import re
import subprocess
from pathlib import Path

import pytest

# A relative path that climbs (`../x`), or code that climbs above a file's own ancestors.
_CLIMBING_PATH = re.compile(r"(?:\.\./)+[\w.-]+")
_CLIMBING_CODE = re.compile(r"\.parents\[\d+\]\.parent\b|\b(?:repo_)?root\.parent\b")
# Files that are read by tools, not run: prose may mention paths outside the checkout.
_PROSE = (".md", ".lock", ".txt", ".json")
_CONFIG = (".yaml", ".yml", ".toml", ".cfg", ".ini")


def _tracked_files(root: Path) -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, check=True, capture_output=True, text=True
    ).stdout
    return [root / name for name in listed.split("\0") if name and not name.endswith(_PROSE)]


def escapes(root: Path, source: Path, text: str) -> list[str]:
    """The references in `text` (from file `source`) that point outside `root`."""
    found = [match.group(0) for match in _CLIMBING_CODE.finditer(text)]
    for match in _CLIMBING_PATH.finditer(text):
        relative = match.group(0)
        # Config files name paths from their own folder; code and scripts run from the root too.
        bases = [source.parent] if source.suffix in _CONFIG else [source.parent, root]
        if not all((base / relative).resolve().is_relative_to(root) for base in bases):
            found.append(relative)
    return found


def test_no_tracked_file_reads_a_path_outside_the_repository(repo_root: Path) -> None:
    offenders = {
        str(path.relative_to(repo_root)): refs
        for path in _tracked_files(repo_root)
        # This file holds examples of what the check catches.
        if path.is_file()
        and path != Path(__file__).resolve()
        and (refs := escapes(repo_root, path, path.read_text(errors="replace")))
    }
    assert offenders == {}


@pytest.mark.parametrize(
    "text",
    [
        # Built from os.pardir so that this file names no path outside the repository itself.
        f'SPEC = ROOT / "{os.pardir}/outside/x.json"',
        "path = Path(__file__).resolve().parents[3].parent / 'x'",
        'root.parent / "outside" / "x.json"',
    ],
)
def test_the_check_catches_a_path_that_climbs_out(repo_root: Path, text: str) -> None:
    assert escapes(repo_root, repo_root / "tools" / "stack" / "tests" / "x.py", text)


def test_the_check_allows_a_path_that_stays_inside(repo_root: Path) -> None:
    source = repo_root / "infra" / "policies" / "PulumiPolicy.yaml"
    assert escapes(repo_root, source, "virtualenv: ../../.venv") == []
