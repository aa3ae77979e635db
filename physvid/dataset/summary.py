"""What a dataset run did and what it would do: `Summary` (a finished `generate` / `write_dataset` call), `Estimate`
(a dry run's plan) and the byte counts they print. Presentation only: nothing here writes or renders."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Summary:
    """What a `write_dataset` / `generate` call did."""

    out: Path
    total_sequences: int
    shard_range: tuple[int, int]
    sequences_written: int = 0
    sequences_kept: int = 0
    shards_written: int = 0
    shards_kept: int = 0
    frames_written: int = 0
    bytes: int = 0  # on disk, every shard of the range
    seconds: float = 0.0  # rendering and writing, without compile_seconds
    compile_seconds: float = 0.0  # compiling (first run) or loading the numba kernels
    finalized: bool = False

    @property
    def frames_per_second(self) -> float:
        return self.frames_written / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        kept = f", kept {self.sequences_kept} from an earlier run" if self.sequences_kept else ""
        state = ("manifest written" if self.finalized else
                 f"shards {self.shard_range[0]}:{self.shard_range[1]} done; run `physvid generate --finalize --out "
                 f"{self.out}` once every shard exists")
        compiled = f" (+ {self.compile_seconds:.1f} s compiling numba kernels)" if self.compile_seconds > 0 else ""
        return (f"{self.sequences_written} sequences ({self.frames_written} frames) written{kept} to {self.out}: "
                f"{human_bytes(self.bytes)}, {self.seconds:.1f} s, {self.frames_per_second:,.0f} frames/s{compiled}; "
                f"{state}")


@dataclass
class Estimate:
    """The plan of a run (`--dry-run`), measured on a few sequences."""

    out: Path
    total_sequences: int
    shard_size: int
    shards: int
    shard_range: tuple[int, int]
    sequences_todo: int
    shards_todo: int
    workers: int
    compression: str
    frames_per_sequence: int
    raw_bytes: int
    estimated_bytes: int
    estimated_seconds: float
    sample: int
    notes: list[str] = field(default_factory=list)
    timings: list[float] = field(default_factory=list)  # seconds per sequence, one per timing of the sample

    def describe(self) -> str:
        lines = [
            f"output:      {self.out}",
            f"sequences:   {self.total_sequences} in {self.shards} shard(s) of {self.shard_size}"
            + (f", shards {self.shard_range[0]}:{self.shard_range[1]} requested"
               if self.shard_range != (0, self.shards) else ""),
            f"to write:    {self.sequences_todo} sequences in {self.shards_todo} shard(s), "
            f"{self.sequences_todo * self.frames_per_sequence} frames, {self.workers} worker process(es)",
            f"bytes:       ~{human_bytes(self.estimated_bytes)} on disk with {self.compression} "
            f"({human_bytes(self.raw_bytes)} uncompressed)",
            f"time:        ~{self.estimated_seconds:.1f} s (median of {len(self.timings)} timings of {self.sample} "
            f"sequence(s); {self._spread()})",
        ]
        return "\n".join(lines + [f"note:        {n}" for n in self.notes])

    def _spread(self) -> str:
        """The estimate each timing alone would give: how much a busy machine moves it."""
        mid = sorted(self.timings)[len(self.timings) // 2] if self.timings else 0.0
        if mid <= 0:
            return "no spread measured"
        lo, hi = (self.estimated_seconds * t / mid for t in (min(self.timings), max(self.timings)))
        return f"each alone: {lo:.1f}–{hi:.1f} s"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"
