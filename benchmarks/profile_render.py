"""Where a render's CPU time goes, by numba function: a sampling profile (Linux `perf`) of `pv.render` in this process.

perf cannot name JIT-compiled code by itself. This script compiles the render kernels afresh (into a temporary
NUMBA_CACHE_DIR: a kernel loaded from numba's cache keeps no symbol table), writes the address of every compiled
function to /tmp/perf-<pid>.map (perf's map file for JIT code), then samples itself with `perf record` while it
renders bench_flow's workload in blocks of 16 sequences (the writer's batch). Functions that numba or LLVM inlined
count towards their caller. Prints each function's share of the samples and its CPU µs per sequence (share × the
loop's CPU time per sequence).

    python benchmarks/profile_render.py --flow              # ~2 minutes: compiling, then 20 s of sampling
    python benchmarks/profile_render.py --noise 0.26 --seconds 40 --keep /tmp/render.perf   # then `perf report -i`

Needs `perf` (linux-tools) and perf_event_paranoid ≤ 2 (the default lets a process sample its own user-space code).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time


def _symbol(name: str) -> str:
    """numba's mangled name (`_ZN7physvid7kernels4flow5_pairB4v117B52c8...`) as a dotted path (physvid.kernels.flow._pair)."""
    if not name.startswith("_ZN"):
        return name
    parts, i = [], 3
    while i < len(name) and name[i].isdigit():  # length-prefixed parts, up to numba's B<n> suffixes
        j = i
        while name[j].isdigit():
            j += 1
        parts.append(name[j:j + int(name[i:j])])
        i = j + int(name[i:j])
    return ".".join(parts) or name


def _write_map(dispatchers) -> int:
    """Write /tmp/perf-<pid>.map: start, size and name of every function in the dispatchers' compiled libraries."""
    starts = {}
    for disp in dispatchers:
        for cres in disp.overloads.values():
            lib = cres.library
            for fn in lib._final_module.functions:  # only a freshly compiled library keeps its module
                if not fn.is_declaration:
                    address = lib.get_pointer_to_function(fn.name)
                    if address:
                        starts[address] = _symbol(fn.name)
    ordered = sorted(starts.items())
    with open(f"/tmp/perf-{os.getpid()}.map", "w") as fh:
        for (address, name), following in zip(ordered, ordered[1:] + [(ordered[-1][0] + 0x10000, "")]):
            fh.write(f"{address:x} {following[0] - address:x} {name}\n")  # a function ends where the next begins
    return len(ordered)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flow", action="store_true", help="render with the motion ground truth (issue 20)")
    ap.add_argument("--noise", type=float, default=0.0, help="noise-to-signal ratio (default 0)")
    ap.add_argument("--property", help="render this property's defaults instead of bench_flow's workload")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long to sample")
    ap.add_argument("--top", type=int, default=25, help="how many functions to print")
    ap.add_argument("--keep", help="keep perf's data file here (default: a temporary file, removed)")
    args = ap.parse_args()
    if shutil.which("perf") is None:
        sys.exit("profile_render: `perf` was not found on PATH; install linux-tools (perf) to profile")
    cache = tempfile.mkdtemp(prefix="numba-profile-")
    os.environ["NUMBA_CACHE_DIR"] = cache  # before numba is imported: compile afresh, so that symbols exist
    try:
        import physvid as pv
        from physvid.kernels import pipeline

        from bench_flow import workload  # the same workload as the on/off benchmark
        base = {"property": args.property} if args.property else workload(args.noise > 0)
        cfg = pv.RenderConfig.from_dict({**base, "noise": {"ratio": args.noise}, "flow": args.flow})
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; compiling the "
              f"kernels afresh (a minute or two) ...", flush=True)
        pv.render(cfg, range(10**6, 10**6 + 16))
        n = _write_map([pipeline.render_batch, pipeline.render_batch_noisy])
        data = args.keep or os.path.join(cache, "perf.data")
        rec = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock:u", "-p", str(os.getpid()), "-o", data,
                                "--", "sleep", str(args.seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # perf attaches
        t0, blocks = time.process_time(), 0
        while rec.poll() is None:
            pv.render(cfg, range(blocks * 16, blocks * 16 + 16))
            blocks += 1
        per_seq = (time.process_time() - t0) / max(blocks * 16, 1) * 1e6
        if rec.returncode != 0:
            sys.exit(f"profile_render: perf record failed: {rec.stderr.read().decode().strip().splitlines()[-1:]}")
        report = subprocess.run(["perf", "report", "-i", data, "--sort", "sym", "--stdio", "-q"],
                                capture_output=True, text=True).stdout
        print(f"{n} compiled functions mapped; {blocks * 16} sequences sampled, {per_seq:.0f} CPU µs per sequence "
              f"({args.property or 'bench_flow workload'}, flow {'on' if args.flow else 'off'}, noise {args.noise})")
        print(f"{'share':>6} {'µs/seq':>7}  function")
        for line in report.splitlines()[:args.top]:
            m = re.match(r"\s*([\d.]+)%\s+\[\.\]\s+(\S+)", line)
            if m:
                share = float(m.group(1))
                print(f"{share:5.1f}% {share / 100 * per_seq:7.1f}  {_symbol(m.group(2))}")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if os.path.exists(f"/tmp/perf-{os.getpid()}.map") and not args.keep:
            os.remove(f"/tmp/perf-{os.getpid()}.map")


if __name__ == "__main__":
    main()
