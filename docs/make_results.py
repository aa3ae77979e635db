"""Copy the tables and figures of a `stmoe reproduce` folder into docs (docs/results.md quotes them).

    python docs/make_results.py runs/cpu            # the --out of `stmoe reproduce ... --profile cpu`

Writes docs/images/results-<experiment>-<figure>.png for every figure of every experiment in the folder and prints
each experiment's table.md, so that the page is pasted from a real run, never typed.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

IMAGES = Path(__file__).resolve().parent / "images"


def main(out: Path) -> None:
    for results in sorted(out.glob("*/results.json")):
        name = results.parent.name
        res = json.loads(results.read_text())
        for fig in res["figures"]:
            shutil.copy(results.parent / fig, IMAGES / f"results-{name}-{fig}")
        print((results.parent / "table.md").read_text())
        print(f"<!-- {name}: {res['seconds_this_call']} s this call, jobs {res.get('jobs')}, figures "
              f"{', '.join(f'results-{name}-{f}' for f in res['figures'])} -->\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python docs/make_results.py OUT   (the folder of `stmoe reproduce`)")
    main(Path(sys.argv[1]))
