"""Build build/jobs.zip, the AWS Lambda bundle of the scheduled jobs (python3.11, x86_64)."""

# Run from anywhere: `uv run python services/jobs/package.py [--output PATH]`.
# The dependencies are exactly those of uv.lock (`uv export --frozen`), installed as manylinux
# wheels for the Lambda runtime whatever machine builds the bundle; the two workspace
# packages are built as wheels and installed beside them.

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO_ROOT / "build" / "jobs.zip"
PACKAGE = "mailstack-jobs"
WORKSPACE_PACKAGES = ("mailstack-core", "mailstack-jobs")
# Amazon Linux 2 (the python3.11 runtime) has glibc 2.26; manylinux2014 wheels need 2.17.
# greenlet (from sqlalchemy[asyncio], which mailstack-core declares for the services) ships no
# manylinux2014 wheel; the jobs use SQLAlchemy synchronously, which never imports it.
NOT_BUNDLED = ("greenlet",)
LAMBDA_PLATFORM = "x86_64-manylinux2014"
LAMBDA_PYTHON = "3.11"
# A fixed timestamp: the same sources and locked versions give the same zip, byte for byte,
# so `pulumi up` sees no change when nothing changed.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
INSTALLER_FILES = frozenset(
    {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json"}
)


def _uv() -> list[str]:
    configured = os.environ.get("UV")
    if configured:
        return configured.split()
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def _run(*args: str) -> None:
    print("+", " ".join(args), flush=True)  # noqa: T201
    subprocess.run(args, cwd=REPO_ROOT, check=True)


def export_requirements(path: Path) -> None:
    """The locked third-party dependencies of the jobs, without the workspace packages."""
    _run(
        *_uv(),
        "export",
        "--package",
        PACKAGE,
        "--no-dev",
        "--frozen",
        "--no-hashes",
        "--no-emit-workspace",
        "--no-header",
        *(f"--no-emit-package={name}" for name in NOT_BUNDLED),
        "--output-file",
        str(path),
    )


def build_workspace_wheels(out_dir: Path) -> list[Path]:
    for package in WORKSPACE_PACKAGES:
        _run(*_uv(), "build", "--package", package, "--wheel", "--out-dir", str(out_dir))
    return sorted(out_dir.glob("*.whl"))


def install(target: Path, requirements: Path, wheels: list[Path]) -> None:
    """Wheels only, for the Lambda platform; `--no-deps` because the export is complete."""
    _run(
        *_uv(),
        "pip",
        "install",
        "--target",
        str(target),
        "--python-platform",
        LAMBDA_PLATFORM,
        "--python-version",
        LAMBDA_PYTHON,
        "--only-binary",
        ":all:",
        "--no-deps",
        "--requirement",
        str(requirements),
        *(str(wheel) for wheel in wheels),
    )


def _bundled(path: Path, source: Path) -> bool:
    relative = path.relative_to(source)
    if relative.parts[0] == "bin" or "__pycache__" in relative.parts or path.suffix == ".pyc":
        return False
    # The installer's bookkeeping names paths and times of the building machine; a Lambda
    # bundle is never uninstalled, so it is left out.
    return not (path.parent.name.endswith(".dist-info") and path.name in INSTALLER_FILES)


def write_zip(source: Path, output: Path) -> int:
    """Zip `source` with sorted entries and fixed timestamps; skip scripts and caches."""
    files = sorted(path for path in source.rglob("*") if path.is_file() and _bundled(path, source))
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for path in files:
            entry = zipfile.ZipInfo(path.relative_to(source).as_posix(), date_time=ZIP_DATE)
            entry.compress_type = zipfile.ZIP_DEFLATED
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            entry.external_attr = (0o100000 | mode) << 16
            bundle.writestr(entry, path.read_bytes())
    partial.replace(output)
    return len(files)


def build(output: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="mailstack-jobs-package-") as scratch:
        work = Path(scratch)
        requirements = work / "requirements.txt"
        export_requirements(requirements)
        wheels = build_workspace_wheels(work / "wheels")
        target = work / "bundle"
        install(target, requirements, wheels)
        count = write_zip(target, output)
    size_mb = output.stat().st_size / 1_000_000
    print(f"wrote {output} ({count} files, {size_mb:.1f} MB)")  # noqa: T201
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the zip to write")
    args = parser.parse_args()
    build(args.output.resolve())


if __name__ == "__main__":
    main()
