"""The Lambda bundle: built from uv.lock for the Lambda platform, self-contained, reproducible."""

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

# Installs wheels from PyPI (or uv's cache): a few seconds warm, under a minute cold.
pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[1] / "package.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mailstack_jobs_package_script", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output: Path = _load_script().build(tmp_path_factory.mktemp("bundle") / "jobs.zip")
    return output


def test_the_bundle_holds_both_handlers_the_shared_library_and_linux_wheels(
    bundle: Path,
) -> None:
    names = set(zipfile.ZipFile(bundle).namelist())

    assert {"mailstack_jobs/cleanup.py", "mailstack_jobs/retry.py"} <= names
    assert "mailstack_core/tables.py" in names
    assert any(name.startswith("mailstack_core/migrations/versions/0001") for name in names)
    assert any(name.startswith("psycopg_binary/") and "x86_64-linux-gnu" in name for name in names)
    assert any(name.startswith("pydantic_core/") and name.endswith(".so") for name in names)
    assert not any("__pycache__" in name or name.startswith("bin/") for name in names)
    assert not any(name.startswith("greenlet") for name in names)


def test_the_handlers_import_from_the_bundle_alone(bundle: Path, tmp_path: Path) -> None:
    zipfile.ZipFile(bundle).extractall(tmp_path)
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import mailstack_jobs.cleanup, mailstack_jobs.retry, psycopg;"
        "from mailstack_jobs.bootstrap import database_engine;"
        "database_engine('postgresql://u:p@127.0.0.1:1/db', 1);"
        "print(mailstack_jobs.cleanup.__file__, psycopg.pq.__impl__)"
    )
    # -I -S: no site-packages, so nothing can come from this virtualenv.
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    location, implementation = result.stdout.split()
    assert Path(location).is_relative_to(tmp_path)
    assert implementation == "binary"


def test_the_same_sources_build_the_same_bytes(bundle: Path, tmp_path: Path) -> None:
    again: Path = _load_script().build(tmp_path / "jobs.zip")

    assert again.read_bytes() == bundle.read_bytes()
