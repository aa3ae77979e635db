"""The shell examples of README.md and docs/cli.md, run in reading order (README first) on tiny sizes in one temporary
folder, as a reader who follows both would (issues 12, 18): an example that fails, that needs an earlier one it does not
follow (a preview of maps nobody generated) or that collides with an earlier page's output, fails here.

Each ```bash block is read line by line (backslash continuations joined); the `physvid ...` and `stmoe ...` commands of
a line run (the rest of a line, `pip install` or `echo`, is the reader's). Lines with shell variables, cluster
submissions or the tiny training script (minutes; tests/test_train*.py cover it) are left out. Sizes shrink by
substitution, keeping different sizes different (`--n 1000` and `--n 10000` into one folder is a refusal, and
must stay one here), and `../shared/` is the shared folder beside the checkout.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PAGES = ("README.md", "docs/cli.md")
LEFT_OUT = ("$", "sbatch", "torchrun", "scripts/", "pytest")
N_OPTION = re.compile(r"--n (\d[\d_]*)")
SHRINK = ((re.compile(r"--size 128\b"), "--size 32"),)


def small_n() -> dict[str, str]:
    """Every `--n` of the pages -> 4, 5, 6, ... in order of size: tiny, and distinct where the pages' are."""
    sizes = sorted({int(m.replace("_", "")) for page in PAGES for m in N_OPTION.findall((REPO / page).read_text())})
    return {str(n): str(4 + i) for i, n in enumerate(sizes)}


def blocks(page: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", (REPO / page).read_text(), re.S | re.M)


def commands(page: str) -> list[str]:
    """The page's physvid/stmoe commands, in order, shrunk and made runnable from any folder."""
    out = []
    shrink_n = small_n()
    for block in blocks(page, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            parts = [p.strip() for p in line.split("&&")]
            parts = [p for p in parts if p.split(" ", 1)[0] in ("physvid", "stmoe")]
            if not parts or any(word in line for word in LEFT_OUT):
                continue
            for i, part in enumerate(parts):
                part = N_OPTION.sub(lambda m: f"--n {shrink_n[m.group(1).replace('_', '')]}", part)
                for pattern, small in SHRINK:
                    part = pattern.sub(small, part)
                tool, rest = part.split(" ", 1)
                parts[i] = f'"{sys.executable}" -m {tool} {rest.replace("../shared/", f"{SHARED}/")}'
            out.append(" && ".join(parts))
    return out


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_pages_have_examples_to_run():
    assert len(commands("README.md")) >= 6 and len(commands("docs/cli.md")) >= 15


def test_shell_examples_run_in_reading_order_in_one_folder(tmp_path):
    for page, command in [(page, c) for page in PAGES for c in commands(page)]:
        if str(SHARED) in command and not SHARED.is_dir():
            continue  # needs ../shared (README, Tests); the commands after it do not use its output
        result = run(command, tmp_path)
        assert result.returncode == 0, f"{page}: {command}\n{result.stdout}{result.stderr}"
        assert "Traceback" not in result.stderr, f"{page}: {command}\n{result.stderr}"


def test_the_python_example_of_cli_md_runs_as_a_script(tmp_path):
    (code,) = [b for b in blocks("docs/cli.md", "python") if "__main__" in b]
    script = tmp_path / "example.py"
    script.write_text(code.replace("10_000", "8").replace("num_workers=4", "num_workers=0")
                      .replace(" workers=4", " workers=2, shard_size=4").replace("ds[123]", "ds[7]"))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_documented_summary_size_is_what_the_readme_job_writes(tmp_path):
    text = (REPO / "docs" / "cli.md").read_text()
    (documented,) = re.findall(r"`1000 sequences \(10000 frames\) written to data/rotation: ([\d.]+ MB),", text)
    result = run(f'"{sys.executable}" -m physvid generate --property rotation --n 1000 --out data/rotation', tmp_path)
    assert result.returncode == 0, result.stderr
    assert f": {documented}," in result.stdout, (documented, result.stdout)


def test_every_physvid_figure_of_the_docs_is_what_make_figures_draws(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "docs" / "make_figures.py"), str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    images = REPO / "docs" / "images"
    drawn = {p.name for p in tmp_path.glob("*.png")}
    missing_digits = not (SHARED / "data" / "mnist").is_dir()  # then the digit pictures and the strips' last row are left out
    partial = {"readme-strips.png"} if missing_digits else set()
    stale = sorted(name for name in drawn - partial if (tmp_path / name).read_bytes() != (images / name).read_bytes())
    assert not stale, f"docs/images differ from what docs/make_figures.py draws now: {stale}; re-run it"
    # every picture a page shows is drawn by make_figures.py, by the tiny training run (stmoe-tiny-*, copied by
    # docs/make_stmoe_figures.py) or by `stmoe reproduce` (results-*, copied by docs/make_results.py)
    shown = set(re.findall(r"images/([\w.-]+\.png)", " ".join(p.read_text() for p in [REPO / "README.md",
                                                                                        *REPO.glob("docs/**/*.md")])))
    # (stmoe-own-*: docs/make_own_data_figures.py, the "your own data" walk-through)
    orphans = sorted(n for n in shown - drawn if not n.startswith(("stmoe-tiny-", "results-", "stmoe-own-"))
                     and not (missing_digits and n.startswith("dynamic-mnist")))
    assert not orphans, f"pictures with no generating script: {orphans}"
