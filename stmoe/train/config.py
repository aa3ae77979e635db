"""Training configuration: frozen dataclasses, presets, YAML files and dotted command-line overrides.

One document describes a whole experiment (paper §3.2 and §4)::

    model:  {name: stmoe-conv, height: 64, ...}     # the STMoE (or any registered model); its config fields inline
    data:   {input_frames: 4, output_frames: 6, batch_size: 16, split: [0.8, 0.1, 0.1], ...}
    optim:  {epochs: 20, lr: 0.001, schedule: cosine, grad_clip: 1.0, ...}
    loss:   {recon_alpha: 0.0, recon_c: 0.9, ...}   # stmoe.losses.LossConfig, Eq. 7-8
    run:    {seed: 0, device: auto, precision: auto, ...}
    synthetic: [D1, D2, D3]                         # D^k, one physvid folder per expert (local optimisation)
    all: []                                         # D^all; empty = the synthetic folders together
    real: DIR                                       # the (small) real dataset (global optimisation)
    stages:                                         # per-stage sections, deep-merged over the ones above
      decoder: {model: {name: mim}, loss: {...}}    #   F^0 of stage 1 (inherits the STMoE's size fields)
      experts: {...}   gating: {...}   global: {...}   end_to_end: {...}   baseline: {model: {name: mim}}

Precedence: preset < YAML file < command line. Merging goes by presence: a key the command line did not set never
overrides the file, whatever its value (0, false and "" do override). :meth:`Config.stage` resolves the
:class:`TrainConfig` of one stage.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..losses import LossConfig, LossConfigError
from .errors import TrainConfigError

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


# --------------------------------------------------------------------------------------------------- checks
def _where(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _int(obj: Any, name: str, prefix: str, low: int = 1, optional: bool = False, high: int | None = None) -> None:
    v = getattr(obj, name)
    if optional and v is None:
        return
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low or (high is not None and v > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise TrainConfigError(f"{_where(prefix, name)} must be an integer {bounds}{' or null' if optional else ''}, "
                               f"got {v!r}")


def _float(obj: Any, name: str, prefix: str, low: float | None = None, high: float | None = None,
           low_open: bool = False) -> None:
    v = getattr(obj, name)
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise TrainConfigError(f"{_where(prefix, name)} must be a finite number, got {v!r}")
    if low is not None and (v <= low if low_open else v < low):
        raise TrainConfigError(f"{_where(prefix, name)} must be {'>' if low_open else '>='} {low}, got {v!r}")
    if high is not None and v > high:
        raise TrainConfigError(f"{_where(prefix, name)} must be <= {high}, got {v!r}")
    object.__setattr__(obj, name, float(v))


def _choice(obj: Any, name: str, prefix: str, allowed: tuple[str, ...]) -> None:
    v = getattr(obj, name)
    if v not in allowed:
        raise TrainConfigError(f"{_where(prefix, name)}: unknown value {v!r}; allowed: {', '.join(allowed)}")


def _bool(obj: Any, name: str, prefix: str) -> None:
    if not isinstance(getattr(obj, name), bool):
        raise TrainConfigError(f"{_where(prefix, name)} must be true or false, got {getattr(obj, name)!r}")


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
        _choice(self, "split_source", p, SPLIT_SOURCES)
        if self.synthetic is not None:
            from .synthetic import check_synthetic

            object.__setattr__(self, "synthetic", check_synthetic(self.synthetic))
        object.__setattr__(self, "path", _paths(self.path, "data.path"))
        _int(self, "input_frames", p)
        _int(self, "output_frames", p)
        s = self.split
        if (not isinstance(s, (list, tuple)) or len(s) != 3
                or any(isinstance(x, bool) or not isinstance(x, numbers.Real) or not 0 <= x <= 1 for x in s)
                or abs(sum(s) - 1.0) > 1e-6):
            raise TrainConfigError(f"data.split must be three fractions [train, val, test] in [0, 1] summing to 1, "
                                   f"got {s!r}")
        object.__setattr__(self, "split", tuple(float(x) for x in s))
        for name in ("train_range", "val_range", "test_range"):
            _range_pair(self, name, p)
        _int(self, "window_stride", p, low=0)
        _choice(self, "crop", p, CROPS)
        _int(self, "batch_size", p)
        _int(self, "eval_batch_size", p, optional=True)
        _int(self, "num_workers", p, low=0)
        _int(self, "max_sequences", p, optional=True)

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
    # Score the l - 1 warm-up next-frame predictions too (teacher forced), as the PredRNN/PredRNN++/MIM/PhyDNet
    # reference code does: "auto" = on for recurrent baselines and experts, off for window models and the STMoE.
    warmup_loss: str = "auto"

    def __post_init__(self) -> None:
        p = "optim"
        _choice(self, "warmup_loss", p, SWITCHES)
        _choice(self, "monitor", p, MONITORS)
        _choice(self, "fused", p, SWITCHES)
        _int(self, "epochs", p)
        _float(self, "lr", p, low=0.0, low_open=True)
        _float(self, "weight_decay", p, low=0.0)
        b = self.betas
        if not isinstance(b, (list, tuple)) or len(b) != 2 or not all(
                isinstance(x, numbers.Real) and not isinstance(x, bool) and 0 <= x < 1 for x in b):
            raise TrainConfigError(f"optim.betas must be two numbers in [0, 1), got {b!r}")
        object.__setattr__(self, "betas", (float(b[0]), float(b[1])))
        _choice(self, "schedule", p, SCHEDULES)
        _float(self, "min_lr", p, low=0.0)
        _float(self, "onecycle_pct_start", p, low=0.0, high=1.0, low_open=True)
        _float(self, "plateau_factor", p, low=0.0, high=1.0, low_open=True)
        _int(self, "plateau_patience", p, low=0)
        _float(self, "grad_clip", p, low=0.0)
        _int(self, "early_stopping", p, low=0)
        _float(self, "min_delta", p, low=0.0)
        for name in ("teacher_forcing_start", "teacher_forcing_end", "teacher_forcing_fraction"):
            _float(self, name, p, low=0.0, high=1.0)
        _int(self, "max_steps_per_epoch", p, optional=True)


@dataclass(frozen=True)
class RunConfig:
    """Seeds, device, precision and logging of one run."""

    seed: int = 0  # seeds Python, NumPy, torch, the samplers, crops and scheduled sampling
    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:N; under torchrun each rank uses its local GPU
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16
    compile: bool = False  # torch.compile the model's whole roll-out (forward), one graph per stage
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
        _int(self, "seed", p, low=0, high=MAX_SEED)
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu", "cuda", "mps")
                                                    or self.device.startswith("cuda:")):
            raise TrainConfigError(f"run.device: unknown value {self.device!r}; allowed: auto, cpu, cuda, cuda:N, mps")
        _choice(self, "precision", p, PRECISIONS)
        _bool(self, "compile", p)
        _choice(self, "compile_mode", p, COMPILE_MODES)
        if not isinstance(self.compile_backend, str) or not self.compile_backend:
            raise TrainConfigError(f"run.compile_backend must be a torch._dynamo backend name, got "
                                   f"{self.compile_backend!r}")
        _int(self, "threads", p, optional=True)
        _bool(self, "deterministic", p)
        fmts = self.log_formats
        if isinstance(fmts, str):
            fmts = tuple(f for f in fmts.split(",") if f)
        if not isinstance(fmts, (list, tuple)) or any(f not in LOG_FORMATS for f in fmts):
            raise TrainConfigError(f"run.log_formats must be a list of {', '.join(LOG_FORMATS)}, got {self.log_formats!r}")
        object.__setattr__(self, "log_formats", tuple(fmts))
        _int(self, "log_every", p)
        _choice(self, "tensorboard", p, SWITCHES)
        _choice(self, "progress", p, SWITCHES)
        _int(self, "checkpoint_every", p)
        _float(self, "checkpoint_minutes", p, low=0.0)
        _bool(self, "find_unused_parameters", p)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model name and its config fields (see stmoe.create_model)."""

    name: str = "stmoe-conv"
    args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ..models import ModelConfigError
        from ..models.registry import make_config

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
        from ..models import create_model

        return create_model(self.name, **self.args)

    @property
    def model_config(self):
        from ..models.registry import make_config

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


def _section(cls: type, d: Any, prefix: str):
    if d is None:
        raise _null_section(prefix)
    if not isinstance(d, Mapping):
        raise TrainConfigError(f"{prefix} must be a mapping of settings, got {d!r}")
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


# --------------------------------------------------------------------------------------------------- documents
def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge where every key present in ``override`` wins (presence decides, never truthiness)."""
    out = copy.deepcopy(dict(base))
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"optim.lr": 0.01} -> {"optim": {"lr": 0.01}}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = str(key).split(".")
        if not all(parts):
            raise TrainConfigError(f"bad dotted key {key!r}: empty part")
        node = out
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise TrainConfigError(f"dotted key {key!r} conflicts with a value set at {part!r}")
            node = nxt
        node[parts[-1]] = value
    return out


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-3"`` -> ("optim.lr", 0.001); the value is read as YAML (numbers, lists, true/false, null)."""
    import yaml

    from physvid.yamlload import safe_load

    key, sep, raw = str(text).partition("=")
    if not sep or not key.strip():
        raise TrainConfigError(f"--set expects KEY=VALUE (e.g. optim.lr=0.001), got {text!r}")
    try:
        value = safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML 1.1 reads "1e-3" as a string; numbers written that way are meant as numbers.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else int(value)
        except ValueError:
            pass
    return key.strip(), value


TOP_KEYS = ("model", "data", "optim", "loss", "run", "stages", "synthetic", "real", "all")
STAGE_KEYS = ("model", "data", "optim", "loss", "run")


@dataclass(frozen=True)
class Config:
    """A whole experiment: shared sections, dataset folders and per-stage sections (see the module docstring)."""

    doc: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        doc = copy.deepcopy(dict(self.doc))
        _no_unknown(doc, TOP_KEYS, "")
        for key in ("synthetic", "all"):
            doc[key] = list(_paths(doc.get(key), key))
        real = doc.get("real")
        if real is not None and not isinstance(real, (str, Path)):
            raise TrainConfigError(f"real must be a dataset folder, got {real!r}")
        doc["real"] = str(real) if real is not None else None
        stages = doc.get("stages") or {}
        if not isinstance(stages, Mapping):
            raise TrainConfigError(f"stages must be a mapping of stage sections, got {stages!r}")
        _no_unknown(stages, STAGES, "stages")
        for name, section in stages.items():
            if section is None:
                continue
            if not isinstance(section, Mapping):
                raise TrainConfigError(f"stages.{name} must be a mapping, got {section!r}")
            _no_unknown(section, STAGE_KEYS, f"stages.{name}")
            if "model" in section and name not in ("decoder", "baseline"):
                raise TrainConfigError(f"stages.{name}.model: only the decoder (F^0) and baseline stages choose their "
                                       f"own model; the others use the top-level model")
        doc["stages"] = {k: dict(v or {}) for k, v in stages.items()}
        object.__setattr__(self, "doc", doc)
        # Validate what the pipeline will need now, not an hour into it; the baseline and end-to-end sections are
        # checked when those commands resolve them.
        if self.is_mixture:
            if self.base.model.model_config.decoder != "identity":
                self.stage("decoder")
            for k in range(self.num_experts):
                self.expert(k)
            self.stage("gating")
            self.stage("global")

    # ------------------------------------------------------------------ accessors
    @property
    def synthetic(self) -> tuple[str, ...]:
        return tuple(self.doc["synthetic"])

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(self.doc["all"])

    @property
    def real(self) -> str | None:
        return self.doc["real"]

    @property
    def base(self) -> TrainConfig:
        """The top-level sections as a TrainConfig (the STMoE model)."""
        return TrainConfig.from_dict({k: self.doc[k] for k in STAGE_KEYS if k in self.doc})

    def to_dict(self) -> dict:
        return copy.deepcopy(self.doc)

    def replace(self, overrides: Mapping[str, Any]) -> "Config":
        """A copy with dotted or nested overrides applied (by presence)."""
        return Config(merge(self.doc, unflatten(overrides) if any("." in k for k in overrides) else overrides))

    def stage(self, name: str) -> TrainConfig:
        """The TrainConfig of stage ``name``: the shared sections with ``stages.<name>`` merged over them.

        decoder: F^0 = ``stages.decoder.model`` (default MIM, §3.2) with the STMoE's size fields and a conv decoder H.
        experts: not resolved here (one config per expert, :meth:`expert`). baseline: ``stages.baseline.model``
        (default MIM) with the STMoE's size fields and its own conv decoder.
        """
        if name not in STAGES:
            raise TrainConfigError(f"unknown stage {name!r}; allowed: {', '.join(STAGES)}")
        section = self.doc["stages"].get(name, {})
        body = {k: self.doc[k] for k in STAGE_KEYS if k in self.doc}
        stage_model = section.get("model")
        body = merge(body, {k: v for k, v in section.items() if k != "model"})
        if name in ("decoder", "baseline"):
            # F^0 trains the shared conv H; a baseline keeps its own model's decoder (ADDL: the warp alone).
            body["model"] = self._derived_model(stage_model or {}, decoder="conv" if name == "decoder" else None,
                                                where=f"stages.{name}.model")
        try:
            return TrainConfig.from_dict(body)
        except TrainConfigError as exc:
            raise TrainConfigError(f"{exc} (stage {name})") from None

    def _derived_model(self, spec: Mapping[str, Any], decoder: str | None, where: str) -> dict:
        spec = dict(spec)
        name = spec.pop("name", "mim")
        if not isinstance(name, str):
            raise TrainConfigError(f"{where}.name must be a model name, got {name!r}")
        shared = self.shared_model_fields()
        if decoder is None:  # the model's own default decoder
            from ..models import ModelConfigError
            from ..models.registry import model_config_class

            try:
                fields = {f.name: f.default for f in dataclasses.fields(model_config_class(name))}
            except ModelConfigError as exc:
                raise TrainConfigError(f"{where}.{exc}") from None
            decoder = fields["decoder"]
        shared["decoder"] = decoder
        shared.pop("input_frames", None)  # l comes from the stage's data section
        return {"name": name, **shared, **spec}

    def shared_model_fields(self) -> dict[str, Any]:
        """The STMoE's size fields (frame, grid, C_Z, l, layer sizes, decoder kernel) that F^0, experts and baselines share."""
        mc = self.base.model.model_config
        return {k: getattr(mc, k) for k in SHARED_MODEL_FIELDS if hasattr(mc, k)}

    @property
    def is_mixture(self) -> bool:
        return hasattr(self.base.model.model_config, "experts")

    def expert(self, k: int) -> TrainConfig:
        """The TrainConfig of expert k (stage 2): the STMoE's expert k alone, with the STMoE's decoder type."""
        mc = self.base.model.model_config
        if not hasattr(mc, "experts"):
            raise TrainConfigError(f"model.name {self.base.model.name!r} is not a mixture of experts; the experts stage "
                                   f"needs stmoe-id or stmoe-conv")
        if not 0 <= k < len(mc.experts):
            raise TrainConfigError(f"expert index {k} out of range; the model has {len(mc.experts)} experts "
                                   f"(0..{len(mc.experts) - 1})")
        ec = mc.expert_config(k)
        model = {"name": mc.experts[k], **dataclasses.asdict(ec)}
        model.pop("input_frames", None)  # l comes from the stage's data section
        section = self.doc["stages"].get("experts", {})
        body = merge({k2: self.doc[k2] for k2 in STAGE_KEYS if k2 in self.doc}, section)
        body["model"] = model
        try:
            return TrainConfig.from_dict(body)
        except TrainConfigError as exc:
            raise TrainConfigError(f"{exc} (stage experts, expert {k})") from None

    @property
    def num_experts(self) -> int:
        mc = self.base.model.model_config
        return len(mc.experts) if hasattr(mc, "experts") else 0


# --------------------------------------------------------------------------------------------------- presets
# Local stages (decoder, experts) use "the usual loss function of DL experts" (§3.2): alpha = 2, c = 1 is 1/2 MSE.
_L2 = {"recon_alpha": 2.0, "recon_c": 1.0}

PRESETS: dict[str, dict[str, Any]] = {
    # CPU, minutes: 32x32 frames, two-layer ConvLSTM experts and F^0 (two layers so that every registered model,
    # MIM and PredRNN++ included, runs under this preset as a baseline), a few epochs.
    "tiny": {
        "model": {"name": "stmoe-conv", "height": 32, "width": 32, "patch_size": 4, "num_layers": 2, "num_hidden": 16,
                  "filter_size": 3, "experts": ["convlstm", "convlstm", "convlstm"], "gate_channels": 16,
                  "gate_kernel": 3},
        "data": {"input_frames": 4, "output_frames": 4, "batch_size": 8, "split": [0.8, 0.1, 0.1]},
        "optim": {"epochs": 8, "lr": 3e-3, "schedule": "cosine", "teacher_forcing_start": 0.5},
        # On [0, 1] frames the robust reconstruction term is ~3e-3 per pixel, so the paper's entropy weight 0.01 (x rho(ent)
        # ~0.5) outweighs it and the gate collapses onto one expert: measured on this run's gating stage (docs/training.md),
        # mean W of the top expert 1.00 at 0.01, 0.87 at 1e-3, 0.40 at 1e-4 (lowest MSE, best alignment), 0.37 at 0.
        "loss": {"entropy_weight": 1e-4},
        "run": {"log_every": 5, "threads": 1},  # tiny convolutions gain nothing from threads and lose a lot when
                                                  # the cores are shared (OpenMP spin-waits)
        # Experts get 3x the epochs: after 8 epochs the intensity expert barely beat copying the last frame on its own
        # pixels (docs/training.md).
        "stages": {"decoder": {"model": {"name": "convlstm"}, "loss": _L2},
                   "experts": {"loss": _L2, "optim": {"epochs": 24}},
                   # The gate learns from the experts' competition per cell (Jacobs et al. 1991; beyond the paper)
                   # for 96 epochs: with the reconstruction alone (3 of 3 seeds) or fewer epochs (some seeds) the
                   # intensity expert's weight was highest on rotation pixels. The global stage fine-tunes at a
                   # tenth of the lr: at 3e-3 its first epoch took the validation MSE from 5.6 to 9.4 and undid the
                   # gate's routing (docs/training.md has the measurements).
                   "gating": {"optim": {"epochs": 96}, "loss": {"competition_weight": 1.0}},
                   "global": {"optim": {"lr": 3e-4}},
                   "baseline": {"model": {"name": "convlstm"}}},
    },
    # One GPU, hours: 64x64, two-layer MIM experts (§4 STMoE-conv uses MIM for all experts).
    "small": {
        "model": {"name": "stmoe-conv", "height": 64, "width": 64, "patch_size": 4, "num_layers": 2, "num_hidden": 32,
                  "filter_size": 5, "experts": ["mim", "mim", "mim"]},
        "data": {"input_frames": 4, "output_frames": 6, "batch_size": 16, "num_workers": 2},
        "optim": {"epochs": 20, "lr": 1e-3, "schedule": "cosine", "early_stopping": 5},
        "stages": {"decoder": {"model": {"name": "mim"}, "loss": _L2}, "experts": {"loss": _L2},
                   "baseline": {"model": {"name": "mim"}}},
    },
    # The paper's setting (§4, REFERENCE-NOTES): 128x128, l = 4, n = 6, STMoE-Id (ADDL + MIM + MIM), 4 x 128 hidden,
    # 5x5 filters, Adam lr 1e-3, batch 16, robust loss alpha = 0 with c = 0.9 / 0.3 / 0.75 and weights 0.01.
    "paper": {
        "model": {"name": "stmoe-id", "height": 128, "width": 128, "patch_size": 4, "num_layers": 4,
                  "num_hidden": 128, "filter_size": 5, "experts": ["addl", "mim", "mim"]},
        "data": {"input_frames": 4, "output_frames": 6, "batch_size": 16, "num_workers": 4},
        "optim": {"epochs": 100, "lr": 1e-3, "schedule": "plateau", "early_stopping": 10,
                  "teacher_forcing_start": 1.0, "teacher_forcing_end": 0.0, "teacher_forcing_fraction": 0.5},
        "loss": {"recon_alpha": 0.0, "recon_c": 0.9, "entropy_alpha": 0.0, "entropy_c": 0.3, "entropy_weight": 0.01,
                 "smooth_alpha": 0.0, "smooth_c": 0.75, "smooth_weight": 0.01},
        "stages": {"decoder": {"model": {"name": "mim"}, "loss": _L2}, "experts": {"loss": _L2},
                   "baseline": {"model": {"name": "mim"}}},
    },
}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML (or JSON) config file as a dict; dotted keys at any level are unflattened."""
    import yaml

    from physvid.yamlload import safe_load

    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO would block the read forever
        from physvid.dataset.regular import file_kind

        raise TrainConfigError(f"config file {path} is {file_kind(path)}, not a regular file; give a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise TrainConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        doc = safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrainConfigError(f"config file {path} is not valid YAML: {first}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise TrainConfigError(f"config file {path} must hold a mapping of settings, got {type(doc).__name__}")
    return _unflatten_deep(doc)


def _unflatten_deep(d: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        v = _unflatten_deep(v) if isinstance(v, Mapping) else v
        out = merge(out, unflatten({str(k): v}))
    return out


def load_config(preset: str | None = None, file: str | Path | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """preset < YAML file < overrides (dotted keys, only the ones given) -> a validated :class:`Config`."""
    doc: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise TrainConfigError(f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")
        doc = copy.deepcopy(PRESETS[preset])
    if file is not None:
        doc = merge(doc, read_yaml(file))
    if overrides:
        doc = merge(doc, unflatten(dict(overrides)))
    return Config(doc)


def dump_yaml(doc: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(_plain(doc), sort_keys=False, default_flow_style=None)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


__all__ = ["STAGES", "PIPELINE_STAGES", "PRESETS", "DataConfig", "OptimConfig", "RunConfig", "ModelSpec", "TrainConfig",
           "Config", "load_config", "read_yaml", "merge", "unflatten", "parse_assignment", "dump_yaml", "LossConfig"]
