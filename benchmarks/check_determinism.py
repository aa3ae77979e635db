"""Issue 11's full-size determinism check: RUNS runs of `physvid generate -p all --n 4000 --noise-ratio 0.26` (64x64x10,
shards of 100, all cores) per compression, each with the CPU loaded by a concurrent busy process, must give identical
manifest.json files (every shard's sha256).
CI runs the small version (tests/test_determinism.py); this one takes minutes.

    python benchmarks/check_determinism.py                  # 3 runs x gzip, lzf of 4,000 sequences
    python benchmarks/check_determinism.py --n 500 --runs 2
    python benchmarks/check_determinism.py --n 500 --runs 2 --flow   # with the motion ground truth (issue 20)
Exit 0 when every run of a compression wrote the same manifest, 1 otherwise.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--shard-size", type=int, default=100)
    ap.add_argument("--compression", nargs="+", default=["gzip", "lzf"])
    ap.add_argument("--flow", action="store_true", help="also write the motion ground truth (--flow)")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    flow = ["--flow"] if args.flow else []
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for comp in args.compression:
            digests = []
            for run in range(args.runs):
                hog = subprocess.Popen([sys.executable, "-c", "while True: sum(range(10**6))"])
                t0 = time.perf_counter()
                out = Path(tmp) / f"{comp}-{run}"
                try:
                    subprocess.run([sys.executable, "-m", "physvid", "generate", "-p", "all", "--n", str(args.n),
                                    "--shard-size", str(args.shard_size), "--noise-ratio", "0.26",
                                    "--compression", comp, "--quiet", "--out", str(out)] + flow, env=env, check=True)
                finally:
                    hog.kill()
                    hog.wait()
                digests.append(hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest())
                print(f"{comp} run {run}: manifest sha256 {digests[-1][:16]} ({time.perf_counter() - t0:.1f} s)")
            same = len(set(digests)) == 1
            ok &= same
            print(f"{comp}: {'identical' if same else 'DIFFERENT'} manifests over {args.runs} runs")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
