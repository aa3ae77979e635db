"""The sections of one stage's configuration (model, data, optim, run; loss is stmoe.losses.LossConfig) and the
TrainConfig that holds them. Frozen dataclasses that check every field on construction and name the bad one."""
from __future__ import annotations

import copy
import dataclasses
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from physvid.checks import Checks

from ...losses import LossConfig, LossConfigError
from ..errors import TrainConfigError

STAGES = ("decoder", "experts", "gating", "global", "end_to_end", "baseline")
PIPELINE_STAGES = ("decoder", "experts", "gating", "global")
SCHEDULES = ("none", "cosine", "onecycle", "plateau")
PRECISIONS = ("auto", "fp32", "bf16")
CROPS = ("center", "random")
SPLIT_SOURCES = ("auto", "dataset", "fractions")
SWITCHES = ("auto", "on", "off")
MONITORS = ("loss", "mse")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
LOG_FORMATS = ("jsonl", "csv")
# Model fields every model of one experiment shares with the STMoE (frame size, grid, C_Z, l), so that an expert
# trained alone, the generalist F^0 and the decoder H all plug into the mixture (Eq. 4, 6).
# Seeds reach torch.manual_seed, which takes 64-bit integers; physvid bounds its seed the same way.
MAX_SEED = 2**63 - 1
SHARED_MODEL_FIELDS = ("in_channels", "height", "width", "patch_size", "num_layers", "num_hidden", "filter_size",
                       "out_channels", "input_frames", "decoder_kernel")



CHECK = Checks(TrainConfigError)


def _where(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check(obj: Any, prefix: str, name: str, kind: str, *args: Any, **kwargs: Any) -> None:
    """Check field ``name`` of a section (physvid.checks, ``kind``: int, float, choice, bool) and keep its
    normalised value (a float field given as 1 holds 1.0)."""
    value = getattr(CHECK, kind)(_where(prefix, name), getattr(obj, name), *args, **kwargs)
    object.__setattr__(obj, name, value)


def _range_pair(obj: Any, name: str, prefix: str) -> None:
    v = getattr(obj, name)
    if v is None:
        return
    if (not isinstance(v, (list, tuple)) or len(v) != 2 or any(isinstance(x, bool) or not isinstance(x, numbers.Integral)
                                                                for x in v) or not 0 <= v[0] <= v[1]):
        raise TrainConfigError(f"{_where(prefix, name)} must be a pair [first, stop) of sequence indices with "
                               f"0 <= first <= stop, or null; got {v!r}")
    object.__setattr__(obj, name, (int(v[0]), int(v[1])))


def _paths(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, Path)):
        value = [v for v in str(value).split(",") if v] if str(value) else []
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, Path)) for v in value):
        raise TrainConfigError(f"{name} must be a path or a list of paths, got {value!r}")
    return tuple(str(v) for v in value)


# --------------------------------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class DataConfig:
    """Clips for training: l input and n target frames cut from physvid sequences, split by index ranges."""

    path: tuple[str, ...] = ()  # physvid folders, read as one dataset; set by the stage (synthetic/real) when empty
    input_frames: int = 4  # l (§4: 4 frames estimate velocity, acceleration and jerk); also the model's input_frames
    output_frames: int = 6  # n, frames predicted and scored
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/val/test fractions of each folder, in index order
    train_range: tuple[int, int] | None = None  # explicit [first, stop) sequence indices of each folder (wins over split)
    val_range: tuple[int, int] | None = None
    test_range: tuple[int, int] | None = None
    window_stride: int = 0  # 0: one clip per sequence (its first l+n frames); k: a clip every k frames
    crop: str = "center"  # training crop to the model's height x width: "center" or "random" (val/test: centre)
    batch_size: int = 16  # per process (DDP: the global batch is world_size times this)
    eval_batch_size: int | None = None  # null: batch_size
    num_workers: int = 0  # DataLoader worker processes
    max_sequences: int | None = None  # use at most this many sequences of each folder (quick runs)
    # Where train/val/test come from: "auto" = the splits a folder's manifest records (physvid generate --splits)
    # when it has them, else `split`; "dataset" = the recorded ones (an error if absent); "fractions" = `split`.
    split_source: str = "auto"
    # A physvid render config to train from the generator, no files (stmoe/train/synthetic.py); wins over `path`.
    synthetic: dict | None = None

    def __post_init__(self) -> None:
        p = "data"
        _check(self, p, "split_source", "choice", SPLIT_SOURCES)
        if self.synthetic is not None:
            from ..synthetic import check_synthetic

            object.__setattr__(self, "synthetic", check_synthetic(self.synthetic))
        object.__setattr__(self, "path", _paths(self.path, "data.path"))
        _check(self, p, "input_frames", "int")
        _check(self, p, "output_frames", "int")
        s = self.split
        if (not isinstance(s, (list, tuple)) or len(s) != 3
                or any(isinstance(x, bool) or not isinstance(x, numbers.Real) or not 0 <= x <= 1 for x in s)
                or abs(sum(s) - 1.0) > 1e-6):
            raise TrainConfigError(f"data.split must be three fractions [train, val, test] in [0, 1] summing to 1, "
                                   f"got {s!r}")
        object.__setattr__(self, "split", tuple(float(x) for x in s))
        for name in ("train_range", "val_range", "test_range"):
            _range_pair(self, name, p)
        _check(self, p, "window_stride", "int", low=0)
        _check(self, p, "crop", "choice", CROPS)
        _check(self, p, "batch_size", "int")
        _check(self, p, "eval_batch_size", "int", optional=True)
        _check(self, p, "num_workers", "int", low=0)
        _check(self, p, "max_sequences", "int", optional=True)

    @property
    def clip_length(self) -> int:
        return self.input_frames + self.output_frames


@dataclass(frozen=True)
class OptimConfig:
    """Adam, a learning-rate schedule, clipping, scheduled sampling and early stopping."""

    epochs: int = 10
    lr: float = 1e-3  # REFERENCE-NOTES: Adam lr 1e-3, batch 16
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"  # none, cosine (to min_lr over all steps), onecycle, plateau (on the validation loss)
    min_lr: float = 0.0
    onecycle_pct_start: float = 0.3  # fraction of the steps spent warming up
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    early_stopping: int = 0  # stop after this many epochs without a better validation loss; 0 = never
    min_delta: float = 0.0  # an epoch is "better" when the validation loss drops by more than this
    # What picks best.pt, early stopping and the plateau schedule: "loss" = the training objective on the validation
    # split (val_loss; what the stage optimises, so a stage whose objective is not the prediction error -- the gating
    # stage's competition -- keeps its own criterion), "mse" = the per-frame MSE of the n predictions (val_mse; the
    # metric the tables report). Without a validation split the training loss is monitored.
    monitor: str = "loss"
    # Adam's implementation: "auto" = fused (one kernel for all parameters, no per-parameter host reads) on CUDA,
    # PyTorch's default on the CPU (whose floats the recorded results are); "on" / "off" force it.
    fused: str = "auto"
    # Scheduled sampling: the chance of feeding the ground truth instead of the prediction goes linearly from
    # teacher_forcing_start to teacher_forcing_end over the first teacher_forcing_fraction of all steps.
    teacher_forcing_start: float = 0.5
    teacher_forcing_end: float = 0.0
    teacher_forcing_fraction: float = 0.5
    max_steps_per_epoch: int | None = None  # cap the steps of an epoch (quick runs)
    # Score the l - 1 next-frame predictions made while reading the observed frames 2..l too (teacher forced), as
    # the PredRNN/PredRNN++/MIM/PhyDNet reference code does: "auto" = on for recurrent baselines and experts, off for
    # window models and the STMoE. (Called warmup_loss at first, a name that read as a learning-rate warm-up.)
    observed_loss: str = "auto"

    def __post_init__(self) -> None:
        p = "optim"
        _check(self, p, "observed_loss", "choice", SWITCHES)
        _check(self, p, "monitor", "choice", MONITORS)
        _check(self, p, "fused", "choice", SWITCHES)
        _check(self, p, "epochs", "int")
        _check(self, p, "lr", "float", low=0.0, low_open=True)
        _check(self, p, "weight_decay", "float", low=0.0)
        b = self.betas
        if not isinstance(b, (list, tuple)) or len(b) != 2 or not all(
                isinstance(x, numbers.Real) and not isinstance(x, bool) and 0 <= x < 1 for x in b):
            raise TrainConfigError(f"optim.betas must be two numbers in [0, 1), got {b!r}")
        object.__setattr__(self, "betas", (float(b[0]), float(b[1])))
        _check(self, p, "schedule", "choice", SCHEDULES)
        _check(self, p, "min_lr", "float", low=0.0)
        _check(self, p, "onecycle_pct_start", "float", low=0.0, high=1.0, low_open=True)
        _check(self, p, "plateau_factor", "float", low=0.0, high=1.0, low_open=True)
        _check(self, p, "plateau_patience", "int", low=0)
        _check(self, p, "grad_clip", "float", low=0.0)
        _check(self, p, "early_stopping", "int", low=0)
        _check(self, p, "min_delta", "float", low=0.0)
        for name in ("teacher_forcing_start", "teacher_forcing_end", "teacher_forcing_fraction"):
            _check(self, p, name, "float", low=0.0, high=1.0)
        _check(self, p, "max_steps_per_epoch", "int", optional=True)


@dataclass(frozen=True)
class RunConfig:
    """Seeds, device, precision and logging of one run."""

    seed: int = 0  # seeds Python, NumPy, torch, the samplers, crops and scheduled sampling
    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:N; under torchrun each rank uses its local GPU
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16
    # torch.compile(model): the whole roll-out, one graph per stage, and through AOTAutograd its backward; the
    # optimiser step stays eager (fused Adam on CUDA). The name is what PyTorch users call torch.compile(model).
    compile: bool = False
    compile_mode: str = "default"  # torch.compile mode: default, reduce-overhead (CUDA graphs), max-autotune, ...
    compile_backend: str = "inductor"  # a torch._dynamo backend; "eager" / "aot_eager" trace without generating code
    threads: int | None = None  # torch CPU threads; null = torch's default
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on GPU)
    log_formats: tuple[str, ...] = LOG_FORMATS  # per-epoch metrics files: metrics.jsonl and/or metrics.csv
    log_every: int = 10  # steps between lines of steps.jsonl
    tensorboard: str = "auto"  # auto: when the tensorboard package is installed
    progress: str = "auto"  # auto: a tqdm bar when stderr is a terminal
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch and the best one are always saved)
    # > 0: save last.pt when this many minutes have passed since the last save instead of every checkpoint_every
    # epochs (many short epochs on a GPU would otherwise spend their time writing checkpoints)
    checkpoint_minutes: float = 0.0
    find_unused_parameters: bool = False  # DDP option, for models that skip parameters in some steps

    def __post_init__(self) -> None:
        p = "run"
        _check(self, p, "seed", "int", low=0, high=MAX_SEED)
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu", "cuda", "mps")
                                                    or self.device.startswith("cuda:")):
            raise TrainConfigError(f"run.device: unknown value {self.device!r}; allowed: auto, cpu, cuda, cuda:N, mps")
        _check(self, p, "precision", "choice", PRECISIONS)
        _check(self, p, "compile", "bool")
        _check(self, p, "compile_mode", "choice", COMPILE_MODES)
        if not isinstance(self.compile_backend, str) or not self.compile_backend:
            raise TrainConfigError(f"run.compile_backend must be a torch._dynamo backend name, got "
                                   f"{self.compile_backend!r}")
        _check(self, p, "threads", "int", optional=True)
        _check(self, p, "deterministic", "bool")
        fmts = self.log_formats
        if isinstance(fmts, str):
            fmts = tuple(f for f in fmts.split(",") if f)
        if not isinstance(fmts, (list, tuple)) or any(f not in LOG_FORMATS for f in fmts):
            raise TrainConfigError(f"run.log_formats must be a list of {', '.join(LOG_FORMATS)}, got {self.log_formats!r}")
        object.__setattr__(self, "log_formats", tuple(fmts))
        _check(self, p, "log_every", "int")
        _check(self, p, "tensorboard", "choice", SWITCHES)
        _check(self, p, "progress", "choice", SWITCHES)
        _check(self, p, "checkpoint_every", "int")
        _check(self, p, "checkpoint_minutes", "float", low=0.0)
        _check(self, p, "find_unused_parameters", "bool")


@dataclass(frozen=True)
class ModelSpec:
    """A registered model name and its config fields (see stmoe.create_model)."""

    name: str = "stmoe-conv"
    args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ...models import ModelConfigError
        from ...models.registry import make_config

        if not isinstance(self.name, str):
            raise TrainConfigError(f"model.name must be a model name, got {self.name!r}")
        object.__setattr__(self, "args", {str(k): v for k, v in dict(self.args).items()})
        try:
            make_config(self.name, **self.args)
        except ModelConfigError as exc:
            raise TrainConfigError(f"model.{exc}") from None

    def to_dict(self) -> dict:
        return {"name": self.name, **copy.deepcopy(self.args)}

    def build(self):
        """The model (a stmoe Predictor)."""
        from ...models import create_model

        return create_model(self.name, **self.args)

    @property
    def model_config(self):
        from ...models.registry import make_config

        return make_config(self.name, **self.args)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs (one stage of the pipeline, or a baseline)."""

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        mc = self.model.model_config
        if mc.input_frames != self.data.input_frames:
            raise TrainConfigError(f"model.input_frames ({mc.input_frames}) must equal data.input_frames "
                                   f"({self.data.input_frames}); set data.input_frames only")

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "data": _asdict(self.data), "optim": _asdict(self.optim),
                "loss": self.loss.to_dict(), "run": _asdict(self.run)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        d = dict(d)
        _no_unknown(d, ("model", "data", "optim", "loss", "run"), "")
        data = _section(DataConfig, d.get("data", {}), "data")
        model = _model_spec(d.get("model", {}), data.input_frames)
        return cls(model=model, data=data, optim=_section(OptimConfig, d.get("optim", {}), "optim"),
                   loss=_loss(d.get("loss", {})), run=_section(RunConfig, d.get("run", {}), "run"))


def _asdict(obj: Any) -> dict:
    out = dataclasses.asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def _no_unknown(d: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise TrainConfigError(f"unknown key {_where(prefix, unknown[0])!r}; allowed: {', '.join(allowed)}")


def _null_section(prefix: str) -> TrainConfigError:
    # YAML's `model:` with nothing after it, or `model: null`: it would replace every setting of the section (the
    # preset's too) by the defaults without a word; say so instead.
    return TrainConfigError(f"{prefix} is null; give a mapping of settings (e.g. {prefix}: {{...}}) or leave the key "
                            "out to keep the preset's or the default settings")


# Keys renamed since they were first written: {section: {old: new}}. Configs stored with runs and checkpoints (and
# users' files) keep the old name; it is read as the new one.
RENAMED = {"optim": {"warmup_loss": "observed_loss"}}


def _section(cls: type, d: Any, prefix: str):
    if d is None:
        raise _null_section(prefix)
    if not isinstance(d, Mapping):
        raise TrainConfigError(f"{prefix} must be a mapping of settings, got {d!r}")
    for old, new in RENAMED.get(prefix, {}).items():
        if old in d:
            if new in d:
                raise TrainConfigError(f"{prefix}.{old} is the old name of {prefix}.{new}; give one of them")
            d = {(new if k == old else k): v for k, v in d.items()}
    allowed = tuple(f.name for f in dataclasses.fields(cls))
    _no_unknown(d, allowed, prefix)
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def _loss(d: Any) -> LossConfig:
    if d is None:
        raise _null_section("loss")
    if not isinstance(d, Mapping):
        raise TrainConfigError(f"loss must be a mapping of settings, got {d!r}")
    _no_unknown(d, tuple(f.name for f in dataclasses.fields(LossConfig)), "loss")
    try:
        return LossConfig(**d)
    except LossConfigError as exc:
        raise TrainConfigError(f"loss.{exc}") from None
    except TypeError as exc:
        raise TrainConfigError(f"loss: {exc}") from None


def _model_spec(d: Any, input_frames: int) -> ModelSpec:
    if d is None:
        raise _null_section("model")
    if not isinstance(d, Mapping):
        raise TrainConfigError(f"model must be a mapping (name and config fields), got {d!r}")
    d = dict(d)
    name = d.pop("name", ModelSpec.name)
    if "input_frames" in d and d["input_frames"] != input_frames:
        raise TrainConfigError(f"model.input_frames ({d['input_frames']}) must equal data.input_frames "
                               f"({input_frames}); set data.input_frames only")
    d["input_frames"] = input_frames
    return ModelSpec(name=name, args=d)


