"""The installable layout: every package folder is listed in pyproject.toml, and `cli/` installs as `physvid_cli`."""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def test_every_package_folder_is_listed():
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    found = set()
    for init in REPO.glob("*/**/__init__.py"):
        rel = init.parent.relative_to(REPO)
        if rel.parts[0] in ("physvid", "stmoe"):
            found.add(".".join(rel.parts))
    found.add("physvid_cli")
    assert conf["package-dir"] == {"physvid_cli": "cli"}
    assert listed == found


def test_console_scripts_point_at_the_namespaced_cli():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["physvid"].startswith("physvid_cli.") and scripts["stmoe"].startswith("physvid_cli.")


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (REPO / "README.md").read_text()
    blocks = [b.split("```")[0].strip() for b in readme.split("```bash")[1:3]]
    assert len(blocks) == 2 and "physvid generate" in blocks[0] and "pytest" in blocks[1]
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert blocks[1] in ci_lines
