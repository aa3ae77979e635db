"""`stmoe` command line: parse options, build one config, call stmoe.train. No logic lives here.

Config precedence: --preset < --config FILE < options typed on the command line (--epochs, --set KEY=VALUE, ...).
Every option defaults to None and only options the user typed override (click's parameter source), so `--seed 0` or
`--no-compile` override a file and an option left out never does. In `stmoe train STAGE` the shortcuts (--epochs,
--lr, ...) set that stage's section (stages.<stage>.*), in `stmoe pipeline` the shared top-level sections.

Errors print `error: <one line>` and exit 2 (usage: bad option, config or data shape) or 1 (runtime: unreadable
file, NaN loss). The same command runs under torchrun for DDP: `torchrun --nproc_per_node 4 $(which stmoe) pipeline ...`.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

import click

from . import KeyOption, check_config_file, examples, fail, given, one_line_errors, run

# Nothing heavy at import: `physvid` pulls in numba and `stmoe` torch (seconds on a busy machine), so the commands
# import them when they run, and `--help`, `--version` or a mistyped option answer at once.


# --------------------------------------------------------------------------- errors: one line, no traceback
def _rank_prefix() -> str:
    rank = os.environ.get("RANK")
    return f"[rank {rank}] " if rank not in (None, "0") and os.environ.get("WORLD_SIZE", "1") != "1" else ""


# What the `train` extra installs (pyproject.toml), by import name: without it every stmoe command fails on import.
TRAIN_EXTRA = ("torch", "scipy", "cv2", "imageio", "imageio_ffmpeg", "av", "matplotlib")


def _translate(exc: BaseException) -> tuple[str, int] | None:
    missing = (getattr(exc, "name", None) or "").split(".")[0] if isinstance(exc, ImportError) else ""
    if missing in TRAIN_EXTRA:  # checked first: the imports below need torch themselves
        return (f"stmoe needs the train extra and {missing} is not installed: pip install torch==2.13.0 (the CPU "
                f"build, or the CUDA build you need), then pip install 'physvid[train]' (in a checkout: "
                f"pip install -e '.[train]')"), 1
    from physvid.errors import PhysvidError

    from stmoe.data.errors import DataError
    from stmoe.losses import LossConfigError
    from stmoe.metrics import MetricsError
    from stmoe.models.errors import ModelConfigError, ModelInputError
    from stmoe.train.errors import TrainError, one_line

    if isinstance(exc, (TrainError, PhysvidError)):
        return one_line(exc), exc.exit_code
    if isinstance(exc, (DataError, ModelConfigError, ModelInputError, LossConfigError, MetricsError)):
        return one_line(exc), 2
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return f"{exc.strerror or one_line(exc)}{where}", 1
    return None


def _cleanup() -> None:
    distributed = sys.modules.get("stmoe.train.distributed")
    if distributed is not None:  # never imported: no process group to close (and torch may be missing)
        distributed.cleanup()


handle_errors = one_line_errors(
    _translate, interrupted="interrupted; checkpoints of finished epochs are kept - re-run the same command with --resume",
    prefix=_rank_prefix, cleanup=_cleanup)


# --------------------------------------------------------------------------- shared options, defined once
SHORTCUTS = (
    KeyOption(("--epochs",), "optim.epochs", click.IntRange(min=1), "Epochs (optim.epochs)."),
    KeyOption(("--lr",), "optim.lr", click.FloatRange(min=0, min_open=True), "Adam learning rate (optim.lr)."),
    KeyOption(("--schedule",), "optim.schedule", click.Choice(("none", "cosine", "onecycle", "plateau")),
             "Learning-rate schedule (optim.schedule)."),
    KeyOption(("--steps-per-epoch", "--max-steps"), "optim.max_steps_per_epoch", click.IntRange(min=1),
             "Cap the optimiser steps of each epoch, not of the run (optim.max_steps_per_epoch)."),
    KeyOption(("--batch-size", "-b"), "data.batch_size", click.IntRange(min=1), "Clips per step and process."),
    KeyOption(("--input-frames", "-l"), "data.input_frames", click.IntRange(min=1), "l, observed frames."),
    KeyOption(("--output-frames", "-n"), "data.output_frames", click.IntRange(min=1), "n, predicted frames."),
    KeyOption(("--loader-workers", "--workers"), "data.num_workers", click.IntRange(min=0),
             "DataLoader worker processes (data.num_workers)."),
    KeyOption(("--seed",), "run.seed", click.IntRange(min=0, max=2**63 - 1), "Seed of everything (run.seed)."),
    KeyOption(("--device",), "run.device", str, "auto, cpu, cuda or cuda:N (run.device)."),
    KeyOption(("--precision",), "run.precision", click.Choice(("auto", "fp32", "bf16")),
             "auto = bf16 autocast on GPU, fp32 on CPU (run.precision)."),
    KeyOption(("--threads",), "run.threads", click.IntRange(min=1), "torch CPU threads (run.threads)."),
    KeyOption(("--compile/--no-compile",), "run.compile", None,
              "torch.compile the model's roll-out and its backward, not the optimiser step (run.compile).", flag=True),
    KeyOption(("--progress/--no-progress",), "run.progress", None, "Progress bar on stderr (default: when a terminal).",
             flag=True, to_config=lambda v: {"run.progress": "on" if v else "off"}),
)


def config_options(f: Callable) -> Callable:
    """--preset, --config, --set and the shortcuts (in `stmoe pipeline` a shortcut sets every stage; --set KEY only
    the key it names, which a stage's own section overrides)."""
    for s in reversed(SHORTCUTS):
        f = s.option()(f)
    f = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Set any config key (dotted, value as YAML), e.g. --set loss.entropy_weight=0.05; "
                          "repeatable.")(f)
    f = click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="YAML config file (see `stmoe config`); the command line wins.")(f)
    f = click.option("--preset", type=click.Choice(("tiny", "small", "paper")), default=None,
                     help="Start from a preset: tiny (CPU, minutes), small (one GPU), paper (§4 setting).")(f)
    return f


def data_options(*kinds: str) -> Callable:
    """The dataset options of the `kinds` a command reads (synthetic, real, all), so that --help lists only those."""

    def decorate(f: Callable) -> Callable:
        if "all" in kinds:
            f = click.option("--all", "all_dirs", default=None, metavar="DIR,...",
                             help="D^all for the decoder stage [default: the --synthetic folders together].")(f)
        if "real" in kinds:
            f = click.option("--real", default=None, metavar="DIR", help="The real dataset (a physvid folder, see "
                                                                          "`stmoe prepare`).")(f)
        if "synthetic" in kinds:
            f = click.option("--synthetic", default=None, metavar="DIR,DIR,...",
                             help="D^1..D^m, one physvid folder per expert, in the model's expert order.")(f)
        return f

    return decorate


def _writable_folder(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """--out must be a folder this process can create and write (usage error, exit 2), checked before any work."""
    if value is None:
        return value
    probe = os.path.abspath(value)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        why = "is not a folder" if not os.path.isdir(probe) else "is not writable"
        fail(f"cannot write the run folder {value}: {probe} {why}; choose a writable --out", 2, _rank_prefix())
    return value


def run_options(f: Callable | None = None, *, checkpoint: str = "OUT/checkpoints/last.pt",
                runs: tuple[str, ...] = ("checkpoints/last.pt",)) -> Callable:
    """--out and --resume; `checkpoint` is where this command's --resume continues from, `runs` the files (globs
    below OUT) of which --resume needs one (stmoe.train.stages.check_resume_folder)."""

    def decorate(f: Callable) -> Callable:
        @functools.wraps(f)
        def checked(*args, **kwargs):
            if kwargs.get("resume"):
                from stmoe.train.errors import TrainError
                from stmoe.train.stages import check_resume_folder

                try:
                    check_resume_folder(kwargs["out"], runs)
                except TrainError as exc:
                    fail(str(exc), exc.exit_code, _rank_prefix())
            return f(*args, **kwargs)

        checked = click.option("--resume", is_flag=True, help=f"Continue a killed run from {checkpoint}.")(checked)
        return click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Run folder.",
                            callback=_writable_folder)(checked)

    return decorate(f) if f is not None else decorate


def init_option(f: Callable | None = None, *, multiple: bool = False) -> Callable:
    """--init CKPT: start the stage from another run's weights, with a fresh optimiser and schedule."""
    help_ = ("Fine-tune: start from the weights of this checkpoint (same model and sizes; checked like --resume), "
             "with a fresh optimiser and schedule.")
    if multiple:
        help_ += " Repeat once per trained expert, in order."

    def decorate(f: Callable) -> Callable:
        return click.option("--init", "init", type=click.Path(exists=True, dir_okay=False), multiple=multiple,
                            default=None, metavar="CKPT", help=help_)(f)

    return decorate(f) if f is not None else decorate


def build_config(ctx: click.Context, preset, config_file, sets, options: dict[str, Any], stage: str | None,
                 extra: dict[str, Any] | None = None):
    """preset < file < command line -> stmoe.train.Config."""
    from stmoe.train.config import STAGES, load_config, parse_assignment

    overrides: dict[str, Any] = {}
    # `stmoe train STAGE`: that stage's section. `stmoe pipeline` (and `stmoe config`): the shared sections and every
    # stage's, so that a typed `--epochs 2` is not silently overridden by a preset's stage section (tiny: 24, 96).
    prefixes = [f"stages.{stage}."] if stage else ["", *(f"stages.{s}." for s in STAGES)]
    for s in SHORTCUTS:
        if given(ctx, s.dest):
            value = options[s.dest]
            overrides.update({prefix + key: v for key, v in s.values(value).items() for prefix in prefixes})
    for name, key in (("synthetic", "synthetic"), ("real", "real"), ("all_dirs", "all")):
        if name in ctx.params and given(ctx, name):
            overrides[key] = ctx.params[name]
    overrides.update(extra or {})
    for text in sets:
        key, value = parse_assignment(text)
        overrides[key] = value
    check_config_file(config_file, _rank_prefix())
    return load_config(preset, config_file, overrides)


def shortcut_values(options: dict[str, Any]) -> dict[str, Any]:
    return {s.dest: options.pop(s.dest) for s in SHORTCUTS}


# --------------------------------------------------------------------------- commands
def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from physvid._version import __version__  # physvid/__init__ runs too, but only for --version

    click.echo(f"stmoe, version {__version__}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
             epilog=examples("stmoe pipeline --preset tiny --synthetic d/translation,d/rotation,d/intensity "
                             "--real d/real --out runs/tiny",
                             "stmoe evaluate --checkpoint runs/tiny/global/checkpoints/best.pt --data d/real "
                             "--out metrics.json",
                             "stmoe predict --checkpoint runs/tiny/global/checkpoints/best.pt --data d/real --out pred",
                             "stmoe plot runs/tiny"))
@click.option("--version", "-V", is_flag=True, expose_value=False, is_eager=True, callback=_show_version,
              help="Show the version and exit.")
def cli() -> None:
    """Spatio-Temporal Mixture of Experts: training stages (paper §3.2), evaluation, prediction pictures."""


class StageGroup(click.Group):
    """`stmoe train end_to_end` (the config's spelling) runs `stmoe train end-to-end` (the command's)."""

    def get_command(self, ctx: click.Context, cmd_name: str):
        return super().get_command(ctx, cmd_name.replace("_", "-"))


@cli.group(cls=StageGroup)
def train() -> None:
    """Train one stage (paper §3.2) or a baseline; `stmoe pipeline` runs stages 1-4 in one go."""


@train.command("decoder", epilog=examples(
    "stmoe train decoder --preset tiny --synthetic d/translation,d/rotation,d/intensity --out runs/x/decoder"))
@data_options("synthetic", "all")
@run_options
@init_option
@config_options
@click.pass_context
@handle_errors
def train_decoder_cmd(ctx, out, resume, init, preset, config_file, sets, **options) -> None:
    """Stage 1: a generalist F^0 with the decoder H on D^all; keeps theta_H (skipped for STMoE-Id)."""
    from stmoe.train import train_decoder

    cfg = build_config(ctx, preset, config_file, sets, options, "decoder")
    path = train_decoder(cfg, out, resume=resume, init=init)
    _report(path if path else "the identity decoder (STMoE-Id) has no parameters: stage 1 skipped")


@train.command("experts", epilog=examples(
    "stmoe train experts --preset tiny --synthetic d/translation,d/rotation,d/intensity "
    "--decoder-checkpoint runs/x/decoder/checkpoints/best.pt --out runs/x/experts",
    "stmoe train experts ... --expert 1 --device cuda:1     # one expert per process / GPU"))
@click.option("--decoder-checkpoint", type=click.Path(exists=True, dir_okay=False),
              help="Stage-1 checkpoint holding H (needed by stmoe-conv).")
@click.option("--expert", "expert_ids", type=click.IntRange(min=0), multiple=True,
              help="Train only expert K (repeatable) [default: all, one after the other].")
@data_options("synthetic")
@run_options(checkpoint="OUT/expert-<k>/checkpoints/last.pt", runs=("expert-*/checkpoints/last.pt",))
@init_option(multiple=True)
@config_options
@click.pass_context
@handle_errors
def train_experts_cmd(ctx, decoder_checkpoint, expert_ids, out, resume, init, preset, config_file,
                      sets, **options) -> None:
    """Stage 2: each expert F^k alone on its D^k, with H frozen; writes OUT/expert-<k>."""
    from stmoe.train import train_experts

    cfg = build_config(ctx, preset, config_file, sets, options, "experts")
    paths = train_experts(cfg, out, decoder_checkpoint=decoder_checkpoint, experts=expert_ids or None, resume=resume,
                          init=init or None)
    _report(*paths)


@train.command("gating", epilog=examples(
    "stmoe train gating --preset tiny --real d/real --experts-dir runs/x/experts "
    "--decoder-checkpoint runs/x/decoder/checkpoints/best.pt --out runs/x/gating"))
@click.option("--expert-checkpoint", "expert_checkpoints", type=click.Path(exists=True, dir_okay=False), multiple=True,
              help="Stage-2 checkpoint of each expert, in order (repeat once per expert).")
@click.option("--experts-dir", type=click.Path(exists=True, file_okay=False),
              help="The stage-2 folder: uses EXPERTS_DIR/expert-<k>/checkpoints/best.pt.")
@click.option("--decoder-checkpoint", type=click.Path(exists=True, dir_okay=False),
              help="Stage-1 checkpoint holding H [default: the experts' frozen copy].")
@data_options("real")
@run_options
@init_option
@config_options
@click.pass_context
@handle_errors
def train_gating_cmd(ctx, expert_checkpoints, experts_dir, decoder_checkpoint, real, out, resume, init,
                     preset, config_file, sets, **options) -> None:
    """Stage 3: the gating networks (STGN) on real data, experts and H frozen."""
    from stmoe.train import train_gating

    cfg = build_config(ctx, preset, config_file, sets, options, "gating")
    ckpts = list(expert_checkpoints)
    if experts_dir:
        if ckpts:
            raise click.UsageError("give --expert-checkpoint or --experts-dir, not both")
        ckpts = [os.path.join(experts_dir, f"expert-{k}", "checkpoints", "best.pt") for k in range(cfg.num_experts)]
    if not ckpts:
        raise click.UsageError("give the stage-2 experts: --experts-dir DIR or --expert-checkpoint CKPT per expert")
    _report(train_gating(cfg, out, expert_checkpoints=ckpts, decoder_checkpoint=decoder_checkpoint, resume=resume,
                         init=init))


@train.command("global", epilog=examples(
    "stmoe train global --preset tiny --real d/real --checkpoint runs/x/gating/checkpoints/best.pt --out runs/x/global"))
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The stage-3 (gating) checkpoint.")
@data_options("real")
@run_options
@init_option
@config_options
@click.pass_context
@handle_errors
def train_global_cmd(ctx, checkpoint, real, out, resume, init, preset, config_file, sets,
                     **options) -> None:
    """Stage 4: the whole STMoE on real data, from the stage-3 checkpoint."""
    from stmoe.train import train_global

    cfg = build_config(ctx, preset, config_file, sets, options, "global")
    _report(train_global(cfg, out, checkpoint=checkpoint, resume=resume, init=init))


@train.command("end-to-end", epilog=examples("stmoe train end-to-end --preset tiny --real d/real --out runs/e2e"))
@data_options("real")
@run_options
@init_option
@config_options
@click.pass_context
@handle_errors
def train_end_to_end_cmd(ctx, real, out, resume, init, preset, config_file, sets, **options) -> None:
    """Ablation (Table 5): the STMoE architecture trained from scratch on real data only."""
    from stmoe.train import train_end_to_end

    cfg = build_config(ctx, preset, config_file, sets, options, "end_to_end")
    _report(train_end_to_end(cfg, out, resume=resume, init=init))


@train.command("baseline", epilog=examples(
    "stmoe train baseline --preset tiny --model convlstm --real d/real --out runs/convlstm",
    "stmoe train baseline --preset tiny --model convlstm --real d/all --out runs/pre     # pre-train on D^all",
    "stmoe train baseline --preset tiny --model convlstm --real d/mine --init runs/pre/checkpoints/best.pt "
    "--out runs/ft"))
@click.option("--model", "model_name", default=None, help="Registered model name (see `stmoe models`) [default: mim].")
@data_options("real")
@run_options
@init_option
@config_options
@click.pass_context
@handle_errors
def train_baseline_cmd(ctx, model_name, real, out, resume, init, preset, config_file, sets,
                       **options) -> None:
    """Any registered model alone on the real data (the §4 baselines)."""
    from stmoe.train import train_baseline

    extra = {"stages.baseline.model.name": model_name} if given(ctx, "model_name") else None
    cfg = build_config(ctx, preset, config_file, sets, options, "baseline", extra)
    _report(train_baseline(cfg, out, resume=resume, init=init))


@cli.command(epilog=examples(
    "stmoe pipeline --preset tiny --synthetic d/translation,d/rotation,d/intensity --real d/real --out runs/tiny",
    "stmoe pipeline --config exp.yaml --out runs/exp --resume          # continue after a crash",
    "torchrun --nproc_per_node 4 $(which stmoe) pipeline --config exp.yaml --out runs/exp"))
@data_options("synthetic", "real", "all")
@run_options(checkpoint="OUT/<stage>/checkpoints/last.pt (finished stages are skipped)",
             runs=("pipeline.yaml", "**/checkpoints/last.pt"))
@config_options
@click.pass_context
@handle_errors
def pipeline(ctx, synthetic, real, all_dirs, out, resume, preset, config_file, sets, **options) -> None:
    """Stages 1-4 (decoder, experts, gating, global) from one config into OUT/<stage>; finished stages are skipped.

    The shortcut options (--epochs, --lr, -b, ...) set every stage, over the preset's per-stage values (tiny: experts
    24 epochs, gating 96); --set optim.epochs=N sets only the shared value, which per-stage sections override.
    """
    from stmoe.train import run_pipeline

    cfg = build_config(ctx, preset, config_file, sets, options, None)
    ckpts = run_pipeline(cfg, out, resume=resume)
    _report(ckpts["final"])


@cli.command("config", epilog=examples("stmoe config --preset tiny > exp.yaml",
                                       "stmoe config --config exp.yaml --set optim.lr=0.01 --stage gating"))
@click.option("--stage", type=click.Choice(("decoder", "experts", "gating", "global", "end-to-end", "end_to_end",
                                            "baseline")),
              default=None, help="Print the resolved config of one stage instead of the whole document.")
@config_options
@click.pass_context
@handle_errors
def config_cmd(ctx, stage, preset, config_file, sets, **options) -> None:
    """Print the merged config (preset < file < command line) as YAML."""
    from stmoe.train.config import dump_yaml

    cfg = build_config(ctx, preset, config_file, sets, options, None)
    stage = stage.replace("-", "_") if stage else stage  # the command `train end-to-end` is the config's end_to_end
    if stage is None:
        doc = cfg.to_dict()
    elif stage == "experts":
        doc = {f"expert-{k}": cfg.expert(k).to_dict() for k in range(cfg.num_experts)}
    else:
        doc = cfg.stage(stage).to_dict()
    click.echo(dump_yaml(doc), nl=False)


@cli.command(epilog=examples(
    "stmoe prepare ../shared/data/video/traffic-highway-video02.avi --frames 10 --size 64 --out data/traffic",
    "stmoe prepare ../shared/data/texture/fish-frames --frames 8 --stride 1 --size 64 --out data/fish",
    "stmoe prepare ../shared/data/radar/mch/20160711 --kind radar --frames 8 --size 128 --out data/radar"))
@click.argument("source", nargs=-1, required=True)
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Dataset folder to write.")
@click.option("--frames", "-t", "clip_length", type=click.IntRange(min=2), required=True,
              help="Frames per clip (at least l + n of the runs that will read it).")
@click.option("--stride", type=click.IntRange(min=1), default=None,
              help="Frames between clip starts [default: --frames, no overlap].")
@click.option("--frame-step", type=click.IntRange(min=1), default=1, show_default=True,
              help="Keep every k-th source frame.")
@click.option("--size", default="64", show_default=True, metavar="N|HxW", help="Output frame size.")
@click.option("--channels", type=click.Choice(("1", "3")), default="1", show_default=True, help="1 grey, 3 RGB.")
@click.option("--kind", type=click.Choice(("auto", "video", "frames", "array", "radar")), default="auto",
              show_default=True, help="Source kind.")
@click.option("--layout", default="auto", show_default=True,
              help="Array axes: NTHW, TNHW, NTCHW, NTHWC, TNHWC, THW, THWC; auto reads the sidecar that "
                   "`physvid export` writes and refuses an ambiguous 4-D array (see docs/real-data.md).")
@click.option("--array-key", default=None, help="Array to read from a .npz holding several.")
@click.option("--allow-upscale", is_flag=True, help="Allow enlarging frames smaller than --size.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Read at most this many source frames.")
@click.option("--shard-size", type=click.IntRange(min=1), default=1000, show_default=True, help="Clips per shard.")
@click.option("--compression", type=click.Choice(("gzip", "lzf", "none")), default="gzip", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace a dataset already in --out.")
@handle_errors
def prepare(source, out, clip_length, stride, frame_step, size, channels, kind, layout, array_key, allow_upscale,
            max_frames, shard_size, compression, overwrite) -> None:
    """Convert videos, frame folders, .npy/.npz arrays or radar files into a physvid dataset folder of clips."""
    from stmoe.data.prepare import prepare_dataset

    try:
        parts = [int(p) for p in size.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts, default=0) < 1:
        raise click.BadParameter(f"{size!r} is not N or HxW", param_hint="--size")
    src = source[0] if len(source) == 1 else list(source)
    summary = prepare_dataset(src, out, clip_length=clip_length, stride=stride, frame_step=frame_step,
                              size=tuple(parts * 2 if len(parts) == 1 else parts), channels=int(channels), kind=kind,
                              layout=layout if layout == "auto" else layout.upper(), array_key=array_key,
                              allow_upscale=allow_upscale, max_frames=max_frames, shard_size=shard_size,
                              compression=compression, overwrite=overwrite)
    click.echo(summary.describe())


@cli.command(epilog=examples(
    "stmoe evaluate --checkpoint runs/tiny/global/checkpoints/best.pt --data d/real --out metrics.json",
    "stmoe evaluate --checkpoint best.pt --data ../shared/data/video/street-bikes.mp4 --out bikes.json --metrics mse,ssim"))
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--data", required=True, help="A physvid folder (its --split) or a video / frame folder / array / radar.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None, help="metrics JSON [default: print only].")
@click.option("--split", type=click.Choice(("train", "val", "test", "all")), default="test", show_default=True)
@click.option("--metrics", default=None, metavar="A,B,...",
              help="Metric names (mse, mse_pixel, mae, mae_pixel, ssim, psnr, bmse, bmae, flow_mse) "
                   "[default: all but flow_mse].")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=None)
@click.option("--output-frames", "-n", type=click.IntRange(min=1), default=None, help="Predict n frames "
                                                                                          "[default: as trained].")
@click.option("--kind", type=click.Choice(("auto", "video", "frames", "array", "radar")), default="auto")
@click.option("--device", default="auto", show_default=True)
@click.option("--max-clips", type=click.IntRange(min=1), default=None, help="Evaluate at most this many clips.")
@handle_errors
def evaluate(checkpoint, data, out, split, metrics, batch_size, output_frames, kind, device, max_clips) -> None:
    """Metrics per predicted frame and their mean (docs/METRICS.md), printed and written as JSON."""
    from stmoe.train import evaluate as run_evaluate

    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    rank0 = os.environ.get("RANK", "0") == "0"  # evaluation is not split across torchrun ranks: rank 0 reports
    res = run_evaluate(checkpoint, data, out if rank0 else None, split=split, batch_size=batch_size, metrics=names,
                       output_frames=output_frames, device=device, kind=kind, max_clips=max_clips,
                       progress=rank0 and sys.stderr.isatty())
    if not rank0:
        return
    for note in res.get("notes", ()):
        click.echo(f"note: {note}", err=True)
    def line(means: dict) -> str:
        return ", ".join(f"{k} {v:.4g}" if v is not None else f"{k} -" for k, v in means.items())

    click.echo(f"{res['count']} clips, {res['output_frames']} frames each: {line(res['mean'])}"
               + (f"  -> {out}" if out else ""))
    click.echo(f"copy last frame (reference): {line(res['copy_last_frame']['mean'])}")
    if "flow_epe" in res:
        e = res["flow_epe"]
        click.echo(f"flow EPE of the predictions (Farneback vs exact flow): {e['mean']:.4g} px "
                   f"(true frames {e['true_frames']:.4g} px)")
    for name, e in res.get("field_epe", {}).items():
        click.echo(f"ADDL field EPE ({name}, vs minus flow_backward): {e['mean']:.4g} px "
                   f"(zero field {e['zero_field']:.4g} px)")


@cli.command(epilog=examples(
    "stmoe predict --checkpoint runs/tiny/global/checkpoints/best.pt --data d/real --out pred -i 0 -i 1",
    "stmoe predict --checkpoint best.pt --data clip.mp4 --out pred --format gif",
    "stmoe predict --checkpoint best.pt --data clip.mp4 --out fc --horizon 24      # 24 frames past the video's end",
    "stmoe predict --checkpoint best.pt --data d/real --out fc --horizon 12 --start 0 -i 3   # truth ends midway"))
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--data", required=True, help="A physvid folder (its --split) or a video / frame folder / array / radar.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--index", "-i", "indices", type=click.IntRange(min=0), multiple=True,
              help="Clip index in the split (repeatable) [default: 0].")
@click.option("--split", type=click.Choice(("train", "val", "test", "all")), default="test", show_default=True)
@click.option("--format", "formats", default="h5,gif,png", show_default=True, metavar="A,B",
              help="Any of h5 (arrays), gif (truth | prediction), png (strips and attention overlays).")
@click.option("--output-frames", "-n", type=click.IntRange(min=1), default=None,
              help="Predict n frames of clips of l + n frames [default: as trained].")
@click.option("--horizon", type=click.IntRange(min=1), default=None, metavar="H",
              help="Forecast H frames past l observed frames of whole sequences (-i: sequence index), beyond the "
                   "frames present if need be; the outputs mark where the truth ends.")
@click.option("--start", type=int, default=None, metavar="S",
              help="With --horizon: first observed frame (negative: from the end) [default: the last l frames].")
@click.option("--scale", type=click.IntRange(min=1), default=4, show_default=True, help="Pixel upscaling of pictures.")
@click.option("--fps", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--kind", type=click.Choice(("auto", "video", "frames", "array", "radar")), default="auto")
@click.option("--device", default="auto", show_default=True)
@handle_errors
def predict(checkpoint, data, out, indices, split, formats, output_frames, horizon, start, scale, fps, kind,
            device) -> None:
    """Predictions as HDF5, GIFs and PNG strips, with attention-weight overlays per expert (Fig. 4b, 9)."""
    from stmoe.train import predict as run_predict

    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    res = run_predict(checkpoint, data, out, indices=indices or (0,), split=split, formats=fmts,
                      output_frames=output_frames, scale=scale, fps=fps, device=device, kind=kind, horizon=horizon,
                      start=start)
    click.echo("\n".join(f"wrote {f}" for f in res["files"]))


@cli.command(epilog=examples("stmoe plot runs/tiny", "stmoe plot runs/tiny/global --out global.png"))
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None, help="PNG [default: RUN/curves.png].")
@handle_errors
def plot(run, out) -> None:
    """Training curves (loss per step and epoch, validation loss, learning rate) of a run or pipeline folder."""
    from stmoe.train import plot_run

    click.echo(f"wrote {plot_run(run, out)}")


@cli.command(epilog=examples(
    "stmoe reproduce table1 --profile smoke --out runs/t1-smoke            # seconds: the structure",
    "stmoe reproduce table1 --profile cpu --out runs/t1 --seeds 3          # 2 CPU cores",
    "stmoe reproduce table1 --profile cpu --out runs/t1 --resume           # after a crash: finished runs are kept",
    "stmoe reproduce table1 --profile cpu --out runs/t1b --seeds 3 --rows-from docs/results/rows/cpu   # continue elsewhere",
    "stmoe reproduce all --profile gpu --out runs/all",
    "stmoe reproduce table1 --profile gpu --steps-scale 0.05 --compile --loader-workers 4 --jobs 3 --out runs/t1-gpu",
    "stmoe reproduce clips --clips my.mp4 --clips data/mine --rows unet,mim,stmoe-id --out runs/mine   # your clips"))
@click.argument("experiment", metavar="EXPERIMENT")
@click.option("--profile", "-p", "profile", default="cpu", show_default=True,
              help="Scale: smoke (seconds, for tests), cpu (2 cores), gpu (one GPU, 64x64) or paper (128x128).")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Folder for data, runs, tables and figures (one experiment, or `all`, per folder).")
@click.option("--seeds", type=int, default=1, show_default=True, help="Repeat every row with seeds 0..K-1; "
              "tables report mean ± std.")
@click.option("--resume", is_flag=True, help="Continue a reproduction in OUT: finished runs are skipped, an "
              "interrupted one continues from its last checkpoint.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Third-party data (MNIST digits, real clips) [default: ../shared/data beside the repository].")
@click.option("--jobs", "-j", type=int, default=None,
              help="Worker processes training independent rows side by side [default: the profile's; cpu: 2].")
@click.option("--steps-scale", type=float, default=1.0, show_default=True,
              help="Multiply the profile's optimiser steps (a short run of a big profile, e.g. 0.05 for a GPU check).")
@click.option("--compile/--no-compile", "compile_", default=False, show_default=True,
              help="torch.compile every stage (one graph per stage).")
@click.option("--loader-workers", type=int, default=0, show_default=True, help="DataLoader worker processes per run.")
@click.option("--checkpoint-minutes", type=float, default=None,
              help="Save last.pt every N minutes instead of every epoch [default: 5 for gpu/paper, per epoch else].")
@click.option("--clips", "clips", multiple=True, metavar="[NAME=]PATH",
              help="Experiment `clips`: a video, frame folder, .npy/.npz array, radar files or a folder written by "
                   "`stmoe prepare` (clips of 10 frames) to compare the models on; repeatable.")
@click.option("--rows", default=None, metavar="A,B,...",
              help="Experiment `clips`: keep these rows of `real` (model names or labels) [default: all].")
@click.option("--rows-from", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Take finished rows from DIR (the rows/ folder of an earlier reproduction with the same profile "
                   "settings) instead of retraining them: continue a long reproduction on another machine.")
@handle_errors
def reproduce(experiment, profile, out, seeds, resume, data_root, jobs, steps_scale, compile_, loader_workers,
              checkpoint_minutes, clips, rows, rows_from) -> None:
    """Run an experiment of the paper (§4) and write its table beside the paper's numbers (docs/results.md).

    EXPERIMENT: table1 (Dynamic MNIST), table5 (local+global vs end-to-end), table6 (attention none / uniform /
    pixel), noise (noise-ratio ablation, Fig. 8), datasize (Fig. 10), real (traffic, street, textures, radar), clips
    (the rows of real on your own --clips), all, or a comma list (one folder: rows and trained networks are shared).
    """
    from stmoe.reproduce import reproduce as run_reproduce

    results = run_reproduce(experiment, profile, out, seeds=seeds, resume=resume, data_root=data_root, jobs=jobs,
                            steps_scale=steps_scale, compile=compile_, loader_workers=loader_workers,
                            checkpoint_minutes=checkpoint_minutes, log=lambda m: click.echo(m, err=True), clips=clips,
                            rows=[r.strip() for r in rows.split(",") if r.strip()] if rows else (),
                            rows_from=rows_from)
    for name in results:
        click.echo(f"wrote {os.path.join(out, name, 'table.md')}")


@cli.command()
@handle_errors
def models() -> None:
    """List the registered models (experts, baselines, STMoE variants)."""
    from stmoe import list_experts, list_models

    experts = set(list_experts())
    for name in list_models():
        click.echo(f"{name:<12} {'expert/baseline' if name in experts else 'mixture'}")


def _report(*paths: Any) -> None:
    """Rank 0 prints where the result is."""
    if os.environ.get("RANK", "0") == "0":
        for p in paths:
            click.echo(f"best checkpoint: {p}" if not isinstance(p, str) or os.path.exists(p) else str(p))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (`stmoe`)."""
    run(cli, argv, "stmoe")


if __name__ == "__main__":
    main()
