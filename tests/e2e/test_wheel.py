"""A coordinator installed from a built wheel finds its migrations.

Every other test runs on the editable install, which reads ``migrations/`` from
the source tree; only a wheel shows what pyproject's ``package-dir`` and
``package-data`` really ship.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import psycopg
import pytest

from harness.processes import clean_env

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = sorted(path.name for path in (ROOT / "migrations").glob("*.sql"))

pytestmark = pytest.mark.slow


def run(*args: str | Path, cwd: Path) -> str:
    """Run a command to completion; its stdout. Fails the test on a non-zero exit."""
    done = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


def work_tree_copy(destination: Path) -> Path:
    """The tracked and untracked, not ignored, files of the work tree, copied.

    Building in place would reuse ``build/``, whose stale files ship too.
    """
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file may be deleted in the work tree
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip wheel . --no-deps`` builds from the work tree."""
    source = work_tree_copy(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("wheels")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, ".", cwd=source)
    [built] = out.glob("hydra_scheduler-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (no deps); its ``bin`` directory.

    The dependencies come from this venv's site-packages through a ``.pth``
    line: that adds the directory without running the ``.pth`` files in it, so
    the editable install's import hook stays out and ``hydra`` is the wheel's.
    """
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv)
    python = venv / "bin" / "python"
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "-q",
        wheel,
        cwd=venv,
    )
    purelib = run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=venv
    )
    (Path(purelib.strip()) / "hydra_test_deps.pth").write_text(sysconfig.get_paths()["purelib"])
    return venv / "bin"


def test_the_wheel_ships_every_migration(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        shipped = sorted(
            name.removeprefix("hydra/coordinator/migrations/")
            for name in archive.namelist()
            if name.endswith(".sql") and "/migrations/" in name
        )
    assert shipped == MIGRATIONS


def test_hydra_migrate_from_the_wheel_builds_the_schema(
    wheel_venv: Path, empty_db_conninfo: str, tmp_path: Path
) -> None:
    where = run(
        wheel_venv / "python",
        "-c",
        "from importlib import resources; print(resources.files('hydra.coordinator.migrations'))",
        cwd=tmp_path,
    )
    assert Path(where.strip()).is_relative_to(wheel_venv.parent), "not the wheel's package"

    output = run(wheel_venv / "hydra", "migrate", "--db", empty_db_conninfo, cwd=tmp_path)

    assert output.splitlines() == [f"applied {name}" for name in MIGRATIONS]
    with psycopg.connect(empty_db_conninfo) as conn:
        row = conn.execute(
            "SELECT to_regclass('hydra_runs'), to_regclass('hydra_attempts_one_success')"
        ).fetchone()
    assert row == ("hydra_runs", "hydra_attempts_one_success")
