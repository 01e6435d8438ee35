"""Every task file in examples/ is one a coordinator accepts as it is."""

from __future__ import annotations

from pathlib import Path

import psycopg

from support.processes import Cluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".yml"))


def test_every_example_applies_cleanly_as_a_dry_run(cluster: Cluster) -> None:
    files = example_files()
    assert len(files) >= 2, f"no examples in {EXAMPLES}"
    for path in files:
        done = cluster.hydractl.run("apply", "--dry-run", "-f", str(path))
        assert done.returncode == 0, f"{path.name}: {done.stderr}"
        assert done.stderr == "", f"{path.name}: {done.stderr}"
        lines = done.stdout.splitlines()
        assert lines and all(line.endswith(" (dry run)") for line in lines), done.stdout
    with psycopg.connect(cluster.conninfo) as conn:
        assert conn.execute("SELECT count(*) FROM hydra_tasks").fetchone() == (0,)


def test_the_readme_shows_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    for path in example_files():
        assert f"examples/{path.name}" in readme or f"({path.name})" in readme, path.name
