"""`physvid` command line: parse options, build one config, call the library (physvid.dataset). No logic lives here.

Every option that maps to a RenderConfig field is declared once in CONFIG_OPTIONS. Its click default is None and only
options the user actually typed (click's parameter source) override the --config file, so `--noise-ratio 0` or
`--no-masks` override a file, and an option left out never does.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Callable

import click

from . import KeyOption, check_config_file, examples, given, one_line_errors, run, sigterm_as_interrupt

from physvid import __version__
from physvid.config import BOUNDARIES, KERNELS, OVERLAPS, SCOPES, SHAPES
from physvid.errors import PhysvidError
from physvid.properties import PROPERTIES

NOISE_TYPES = ("gaussian", "white", "perlin")


# --------------------------------------------------------------------------- parameter types
class RangeType(click.ParamType):
    """`LO:HI` (or one value V, meaning V:V) -> (lo, hi)."""

    def __init__(self, kind: type = float):
        self.kind = kind
        self.name = "int range" if kind is int else "range"

    def get_metavar(self, param, ctx=None):
        return "LO:HI"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = str(value).replace(",", ":").split(":")
        try:
            nums = [self.kind(p) for p in parts]
        except ValueError:
            self.fail(f"{value!r} is not LO:HI with {'integers' if self.kind is int else 'numbers'} (e.g. 1:3)",
                      param, ctx)
        if len(nums) == 1:
            nums = nums * 2
        if len(nums) != 2:
            self.fail(f"{value!r} is not LO:HI", param, ctx)
        return tuple(nums)


class ListType(click.ParamType):
    """Comma-separated names from a fixed set."""

    name = "list"

    def __init__(self, allowed: tuple[str, ...]):
        self.allowed = allowed

    def get_metavar(self, param, ctx=None):
        return "A,B,..."

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        items = tuple(v.strip() for v in str(value).split(",") if v.strip())
        bad = [v for v in items if v not in self.allowed]
        if bad or not items:
            self.fail(f"{bad[0] if bad else value!r} is not one of {', '.join(self.allowed)}", param, ctx)
        return items


class SizeType(click.ParamType):
    """`64` (square) or `HxW` -> (height, width)."""

    name = "size"

    def get_metavar(self, param, ctx=None):
        return "N|HxW"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            parts = [int(p) for p in str(value).lower().split("x")]
        except ValueError:
            parts = []
        if len(parts) == 1:
            parts *= 2
        if len(parts) != 2:
            self.fail(f"{value!r} is not N or HxW (e.g. 64 or 64x96)", param, ctx)
        return tuple(parts)


# --------------------------------------------------------------------------- shared options, defined once
def _noise_types(value: tuple[str, ...]) -> dict[str, Any]:
    chosen = set(value) - {"none"}
    return {f"noise.{t}": 1.0 if t in chosen else 0.0 for t in NOISE_TYPES}


R, IR = RangeType(float), RangeType(int)
CONFIG_OPTIONS = (
    KeyOption(("--property", "-p"), "property", click.Choice(sorted(PROPERTIES)),
                 "Which physical property drives the objects (required here or in --config)."),
    KeyOption(("--size",), "size", SizeType(), "Frame size, N or HxW  [default: 64]",
                 to_config=lambda v: {"height": v[0], "width": v[1]}),
    KeyOption(("--frames", "-t"), "frames", click.IntRange(min=2), "Frames per sequence  [default: 10]"),
    KeyOption(("--channels",), "channels", click.Choice(["1", "3"]), "1 (grey) or 3 (colour)  [default: 1]",
                 to_config=lambda v: {"channels": int(v)}),
    KeyOption(("--seed",), "seed", click.IntRange(min=0), "Seed of the whole dataset  [default: 0]"),
    KeyOption(("--objects",), "shape.num_objects", IR, "Objects per sequence, LO:HI or N  [default: 1:3]"),
    KeyOption(("--shapes",), "shape.shapes", ListType(SHAPES), f"Comma list of {', '.join(SHAPES)}"),
    KeyOption(("--object-size",), "shape.size", R, "Object diameter in pixels  [default: 12:24]"),
    KeyOption(("--aspect",), "shape.aspect", R, "Minor/major axis of ellipses and rectangles  [default: 0.4:1]"),
    KeyOption(("--thickness",), "shape.thickness", R, "Line thickness in pixels  [default: 2:4]"),
    KeyOption(("--sides",), "shape.sides", IR, "Polygon sides  [default: 3:8]"),
    KeyOption(("--brightness",), "shape.brightness", R, "Object brightness in [0, 1]  [default: 0.6:1]"),
    KeyOption(("--overlap",), "shape.overlap", click.Choice(OVERLAPS), "Where objects overlap  [default: max]"),
    KeyOption(("--digits",), "shape.digits", click.Path(dir_okay=False),
                 "MNIST idx3 images file (.gz or raw) for dynamic-mnist and the digit shape"),
    KeyOption(("--digit-range",), "shape.digit_range", IR,
                 "Draw digits FIRST:STOP of the file only (e.g. 0:9000 train, 9000:10000 test)  [default: all]"),
    KeyOption(("--texture-probability",), "texture.object_probability", click.FloatRange(0, 1),
                 "Chance that an object carries a sine texture  [default: 0.5]"),
    KeyOption(("--background-texture",), "texture.background_probability", click.FloatRange(0, 1),
                 "Chance of a sine-wave background  [default: 0]"),
    KeyOption(("--background-level",), "texture.background_level", R, "Background brightness  [default: 0.1:0.3]"),
    KeyOption(("--texture-frequency",), "texture.frequency", R, "Texture cycles per pixel  [default: 0.08:0.25]"),
    KeyOption(("--texture-contrast",), "texture.contrast", R, "Texture contrast  [default: 0.3:0.8]"),
    KeyOption(("--texture-drift",), "texture.drift", R, "Texture phase speed, rad/frame  [default: 0:0]"),
    KeyOption(("--speed",), "motion.speed", R, "Translation speed, px/frame  [default: 1:3]"),
    KeyOption(("--acceleration",), "motion.acceleration", R,
                 "Translation acceleration, px/frame^2  [default: 0:0.2]"),
    KeyOption(("--jerk",), "motion.jerk", R, "Translation jerk, px/frame^3  [default: 0:0.03]"),
    KeyOption(("--angle",), "motion.angle", R, "Initial orientation, degrees  [default: 0:360]"),
    KeyOption(("--angular-speed",), "motion.angular_speed", R, "Rotation speed, deg/frame  [default: 4:15]"),
    KeyOption(("--angular-acceleration",), "motion.angular_acceleration", R,
                 "Rotation acceleration, deg/frame^2  [default: 0:1]"),
    KeyOption(("--angular-jerk",), "motion.angular_jerk", R, "Rotation jerk, deg/frame^3  [default: 0:0.2]"),
    KeyOption(("--boundary",), "motion.boundary", click.Choice(BOUNDARIES), "At the frame edge  [default: bounce]"),
    KeyOption(("--gain",), "intensity.gain", R, "Intensity kernel sum g per frame (>1 grows)  [default: 0.8:1.25]"),
    KeyOption(("--min-change",), "intensity.min_change", click.FloatRange(0, 1),
                 "Excluded band |g - 1| < this  [default: 0.05]"),
    KeyOption(("--grow-probability",), "intensity.grow_probability", click.FloatRange(0, 1),
                 "Chance that an intensity object grows  [default: 0.5]"),
    KeyOption(("--kernel",), "intensity.kernel", click.Choice(KERNELS), "Intensity kernel  [default: gaussian]"),
    KeyOption(("--kernel-size",), "intensity.kernel_size", click.IntRange(min=1), "Odd kernel size  [default: 3]"),
    KeyOption(("--spread",), "intensity.spread", R, "Gaussian kernel sigma, px  [default: 0.3:0.7]"),
    KeyOption(("--intensity-scope",), "intensity.scope", click.Choice(SCOPES),
                 "Convolve each object or the whole frame  [default: object]"),
    KeyOption(("--noise-ratio",), "noise.ratio", click.FloatRange(0, 10),
                 "Noise ratio: noise mass / signal mass (paper: 0, 0.26, 0.70)  [default: 0]"),
    KeyOption(("--noise-types",), "noise.types", ListType(NOISE_TYPES + ("none",)),
                 "Comma list of gaussian, white, perlin (or none)  [default: all three]", to_config=_noise_types),
    KeyOption(("--masks/--no-masks",), "masks", None, "Store per-object masks  [default: no]", flag=True),
    KeyOption(("--property-maps/--no-property-maps",), "property_maps", None,
                 "Store per-pixel property maps (0 background, 1 translation, 2 rotation, 3 intensity)  [default: no]",
                 flag=True),
    KeyOption(("--flow/--no-flow",), "flow", None, "Store exact forward/backward optical flow, occlusion, motion-boundary "
                 "and appearance-change maps per frame pair (docs/flow.md)  [default: no]", flag=True),
)


def config_options(f: Callable) -> Callable:
    for opt in reversed(CONFIG_OPTIONS):
        f = opt.option()(f)
    return f


def index_option(f: Callable) -> Callable:
    return click.option("--index", "-i", "indices", type=int, multiple=True,
                        help="Sequence index (repeatable); default: see above.")(f)


# --------------------------------------------------------------------------- errors: one line, no traceback
handle_errors = one_line_errors(
    lambda exc: (str(exc), exc.exit_code) if isinstance(exc, PhysvidError) else None,
    interrupted="interrupted; finished shards are kept - re-run the same command to resume")


# --------------------------------------------------------------------------- commands
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
             epilog=examples("physvid generate --property rotation --n 10000",
                             "physvid info rotation", "physvid preview rotation --out preview.gif",
                             "physvid verify rotation"))
@click.version_option(__version__, "--version", "-V", prog_name="physvid")
def cli() -> None:
    """Synthetic physics videos (translation, rotation, intensity, noise) as sharded HDF5 datasets."""


@cli.command(epilog=examples(
    "physvid generate --property rotation --n 10000            # -> ./rotation/",
    "physvid generate -p all --n 20000 --noise-ratio 0.26 --compression lzf --out data/all",
    "physvid generate -p dynamic-mnist --n 250 --size 128 --digits t10k-images-idx3-ubyte.gz",
    "physvid generate --config physvid.yaml --n 500            # file < command line",
    "physvid generate -p all --n 100000 --out /shared/all --shard-range 3:4   # one job of an array",
    "physvid generate --finalize --out /shared/all             # after the whole array"))
@click.option("--n", "-n", "n", type=click.IntRange(min=1), default=None, help="Number of sequences (required).")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None,
              help="Dataset folder  [default: named after the property, e.g. ./rotation]")
@config_options
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML, JSON or TOML file with the same settings (or a manifest.json); the command line wins.")
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help="Sequences per shard file  [default: one shard up to 1000 sequences, else up to 16 shards of "
                   "250-1000]")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes, one shard each at a time  [default: all cores]")
@click.option("--compression", type=click.Choice(("gzip", "lzf", "none")), default=None,
              help="HDF5 filter (always with fletcher32)  [default: gzip]")
@click.option("--shard-range", default=None, metavar="A:B",
              help="Write only shards A..B-1 (job arrays); then run --finalize once.")
@click.option("--finalize", is_flag=True, help="Write the manifest of a folder whose shards all exist, verifying them.")
@click.option("--splits", default=None, metavar="NAME=FRAC,...",
              help="Record named splits as index ranges in the manifest, e.g. train=0.8,val=0.1,test=0.1 (cut in "
                   "index order).")
@click.option("--overwrite", is_flag=True, help="Delete the dataset already in --out and start fresh.")
@click.option("--dry-run", is_flag=True, help="Print the plan (shards, bytes, estimated time) and write nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@click.pass_context
@handle_errors
def generate(ctx: click.Context, n, out, config_file, shard_size, workers, compression, shard_range, finalize,
             splits, overwrite, dry_run, quiet, **options) -> None:
    """Render N sequences into a dataset folder of HDF5 shards plus manifest.json.

    Re-running the same command resumes an interrupted run (finished shards are kept); the result is
    byte-identical to an uninterrupted run, whatever --workers.
    """
    from physvid.dataset import estimate, finalize_dataset, generate as generate_dataset
    from physvid.dataset.configfile import build_render_config, read_config_file
    from physvid.dataset.writer import render_plan

    check_config_file(config_file)
    file_config, file_run = read_config_file(config_file) if config_file else ({}, {})
    overrides: dict[str, Any] = {}
    for opt in CONFIG_OPTIONS:
        if given(ctx, opt.dest):
            overrides.update(opt.values(options[opt.dest]))
    run = dict(file_run)
    for name, value in (("n", n), ("out", out), ("shard_size", shard_size), ("workers", workers),
                        ("compression", compression)):
        if given(ctx, name):
            run[name] = value
    has_property = "property" in overrides or "property" in file_config
    if run.get("out") is None and not has_property:
        raise click.UsageError("give --property (or --out), or set property in --config")
    out_dir = run.get("out") or overrides.get("property") or file_config["property"]

    if finalize:
        expect = None
        if has_property and "n" in run:  # options given with --finalize must describe the dataset in the folder
            config = build_render_config(file_config, overrides, f"config file {config_file}")
            expect = render_plan(config, run["n"], shard_size=run.get("shard_size"),
                                 compression=run.get("compression", "gzip"), out=out_dir)
        manifest = finalize_dataset(out_dir, expect=expect, splits=splits)
        if not quiet:
            click.echo(f"manifest written: {out_dir}/manifest.json ({len(manifest['shards'])} shard(s), "
                       f"{manifest['total_sequences']} sequences, every sha256 verified)")
        return
    if not has_property:
        raise click.UsageError(f"give --property ({', '.join(sorted(PROPERTIES))}) or set property in --config")
    if "n" not in run:
        raise click.UsageError("give --n, the number of sequences (or set n in --config)")
    config = build_render_config(file_config, overrides, f"config file {config_file}")
    kwargs = dict(shard_size=run.get("shard_size"), workers=run.get("workers"),
                  compression=run.get("compression", "gzip"), shard_range=shard_range, overwrite=overwrite,
                  notice=None if quiet else lambda line: click.echo(line, err=True))
    if dry_run:
        click.echo(estimate(config, run["n"], out_dir, **kwargs).describe())
        return
    kwargs["splits"] = splits
    bar = ProgressBar(quiet)
    try:
        with sigterm_as_interrupt():
            summary = generate_dataset(config, run["n"], out_dir, progress=bar, **kwargs)
    finally:
        bar.close()
    if not quiet:
        click.echo(summary.describe())


class ProgressBar:
    """tqdm over sequences on stderr (rate, ETA); silent with --quiet or when stderr is not a terminal."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            disable = self.quiet or not sys.stderr.isatty()
            self.bar = tqdm(total=total, initial=done, unit="seq", desc="generate", file=sys.stderr, disable=disable,
                            dynamic_ncols=True, smoothing=0.05)
        else:
            self.bar.update(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@cli.command(epilog=examples("physvid info data/rotation", "physvid info data/rotation --verify",
                             "physvid info data/rotation/shard-00000.h5 --json"))
@click.argument("path", type=click.Path(exists=True))
@click.option("--verify", is_flag=True, help="Also recompute every sha256 (like `physvid verify`).")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@handle_errors
def info(path, verify, as_json) -> None:
    """Describe a dataset folder or one shard: config, counts, shapes, sizes, property, versions, checksums."""
    from physvid.dataset import describe_dataset
    from physvid.dataset.writer import human_bytes

    d = describe_dataset(path, verify=verify)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        if d.get("checksums_ok") is False:
            raise click.exceptions.Exit(1)
        return
    w = d["written_by"]
    ratio = (f" ({100 * d['bytes_on_disk'] / d['bytes_uncompressed']:.0f} % of it)"
             if d["bytes_uncompressed"] else "")
    lines = [
        f"path:         {d['path']} ({d['kind']})",
        f"format:       {d['format']} {d['format_version']} (this physvid {d['reader_physvid_version']} reads "
        f"{d['reader_format_version']})",
        "written by:   " + ", ".join(f"{k} {v}" for k, v in w.items()),
        f"source:       {d['source']}   property: {d['property']}   seed: {d['seed']}",
        f"sequences:    {d['sequences']:,} ({d['frames']:,} frames) in {d['shards']} shard(s) of {d['shard_size']}",
        f"size:         {human_bytes(d['bytes_uncompressed'])} of arrays, {human_bytes(d['bytes_on_disk'])} on disk"
        f"{ratio}; compression {d['compression']} + fletcher32",
        f"checksums:    {d['checksums']}",
        *(["splits:       " + ", ".join(f"{k} {a}..{b - 1} ({b - a:,})" for k, (a, b) in d["splits"].items())]
          if d.get("splits") else []),
        "datasets:",
    ]
    params = {k: v for k, v in d["datasets"].items() if k.startswith("params/")}
    width = max([14] + [len(name) + 1 for name in d["datasets"] if name not in params])  # names stay apart
    for name, spec in d["datasets"].items():
        if name not in params:
            lines.append(f"  {name:<{width}}{spec['dtype']:<9}{tuple(spec['shape'])}")
    by_shape: dict[str, list[str]] = {}
    for name, spec in params.items():
        by_shape.setdefault(f"{spec['dtype']} {tuple(spec['shape'])}", []).append(name.split("/", 1)[1])
    for shape, names in by_shape.items():
        lines.append(f"  params/ {shape}: {', '.join(names)}")
    lines.append("config:")
    lines += [f"  {k} = {json.dumps(v)}" for k, v in _flatten(d["config"]).items()]
    click.echo("\n".join(lines))
    if d.get("checksums_ok") is False:
        raise click.exceptions.Exit(1)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@cli.command(epilog=examples("physvid verify data/rotation && echo intact", "physvid verify data/rotation --deep"))
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--deep", is_flag=True, help="Also decompress every chunk (checks each chunk's fletcher32).")
@click.option("--quiet", "-q", is_flag=True, help="Print only problems.")
@handle_errors
def verify(directory, deep, quiet) -> None:
    """Recompute every sha256, open every shard, check shapes and dtypes against the manifest; exit 1 on any problem."""
    from physvid.dataset import verify_dataset

    report = verify_dataset(directory, deep=deep)
    if not report.ok:
        click.echo(report.describe(), err=True)
        raise click.exceptions.Exit(1)
    if not quiet:
        click.echo(report.describe())


@cli.command(epilog=examples("physvid preview data/rotation --out preview.gif",
                             "physvid preview data/all --out grid.png -i 0 -i 1 -i 2 --property-map",
                             "physvid preview data/all/shard-00003.h5 --out shard3.png"))
@click.argument("path", type=click.Path(exists=True))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="Output picture: .gif (animated) or .png (grid: rows = sequences, columns = frames).")
@index_option
@click.option("--property-map", is_flag=True,
              help="Overlay the property map (needs a dataset made with --property-maps).")
@click.option("--flow", is_flag=True,
              help="Add each sequence's forward flow in the Middlebury colour coding (needs a dataset made with --flow).")
@click.option("--scale", type=click.IntRange(min=1), default=2, show_default=True, help="Pixel upscaling.")
@click.option("--fps", type=click.IntRange(min=1), default=5, show_default=True, help="GIF frame rate.")
@handle_errors
def preview(path, out, indices, property_map, flow, scale, fps) -> None:
    """Picture some sequences (default: the first 4) as an animated GIF or a PNG grid."""
    from physvid.dataset import preview_dataset

    written = preview_dataset(path, out, indices=indices or None, property_map=property_map, scale=scale, fps=fps,
                              flow=flow)
    click.echo(f"wrote {written}")


@cli.command(epilog=examples("physvid export data/rotation --format npy          # rotation.npy, (T, N, H, W)",
                             "physvid export data/rotation --format mp4 -i 0 -i 1 --scale 4 --out clips",
                             "physvid export data/rotation --format png --out frames",
                             "physvid export data/flow --format flo --out chairs --val-fraction 0.1   # FlyingChairs2"))
@click.argument("directory", type=click.Path(exists=True))
@click.option("--format", "fmt", required=True,
              type=click.Choice(("npy", "mp4", "png", "flo", "kitti", "parquet", "csv", "webdataset")),
              help="Output format (flo: FlyingChairs2 layout, kitti: KITTI 2015 16-bit flow PNGs; need --flow data; "
                   "parquet/csv: the ground truth, one row per (sequence, object); webdataset: tar shards, one "
                   "sample per sequence).")
@click.option("--out", "-o", type=click.Path(), default=None,
              help="Output file or folder  [default: DIR.npy, DIR.parquet, DIR.csv, DIR-mp4/, DIR-png/ or "
                   "DIR-webdataset/ beside DIR]")
@index_option
@click.option("--layout", type=click.Choice(("tnhw", "nthwc", "ntchw")), default="tnhw", show_default=True,
              help="npy axis order; tnhw is Moving-MNIST's (T, N, H, W).")
@click.option("--scale", type=click.IntRange(min=1), default=1, show_default=True, help="Pixel upscaling (mp4, png).")
@click.option("--fps", type=click.IntRange(min=1), default=5, show_default=True, help="mp4 frame rate.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="flo: fraction of the sequences (the last ones) in the val/ split.")
@handle_errors
def export(directory, fmt, out, indices, layout, scale, fps, val_fraction) -> None:
    """Export sequences (default: all) as one .npy, one .mp4 per sequence, one PNG folder per sequence, flow pairs
    (flo, kitti), a ground-truth table (parquet, csv) or WebDataset tar shards."""
    from physvid.dataset import export_dataset

    written = export_dataset(directory, fmt, out, indices=indices or None, layout=layout, fps=fps, scale=scale,
                             val_fraction=val_fraction)
    kind = "folders of PNGs" if written[0].is_dir() else "files"
    if fmt == "webdataset":
        kind = "tar shards"
    where = written[0] if len(written) == 1 else f"{len(written)} {kind} in {written[0].parent}"
    click.echo(f"wrote {where}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (`physvid`)."""
    run(cli, argv, "physvid")


if __name__ == "__main__":
    main()
