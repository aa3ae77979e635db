"""The training stages of paper §3.2, each a function that takes a :class:`Config` and returns its best checkpoint.

Local optimisation (synthetic data D^k):
  1. :func:`train_decoder` -- a generalist F^0 (default MIM) with the decoder H on D^all; only theta_H is kept.
     STMoE-Id has the identity decoder, so there is no theta_H to learn: the stage is skipped (returns None).
  2. :func:`train_experts` -- each F^k alone on D^k with H loaded from stage 1 and frozen, so that every expert's
     feature map decodes through the same H and the maps can be mixed linearly (Eq. 6). Independent runs: one
     process per expert (``--expert K``) works as well as one after the other.
Global optimisation (the real dataset, loss Eq. 8):
  3. :func:`train_gating` -- the STMoE with the trained experts and H loaded and frozen; only the STGNs train.
  4. :func:`train_global` -- the whole network from stage 3, everything trainable.
Ablation and baselines: :func:`train_end_to_end` (the STMoE trained only on real data, Table 5) and
:func:`train_baseline` (any registered model alone). :func:`run_pipeline` runs stages 1-4 into one folder.

Every stage writes a run folder (config.yaml, metrics, checkpoints/last.pt and best.pt, result.json) and resumes
from checkpoints/last.pt when ``resume`` is true; the pipeline skips stages whose result.json exists. Every stage
function takes ``init=CKPT`` (``--init``): the model starts from that checkpoint's weights (after what the stage
loads itself), with a fresh optimiser and schedule (:func:`init_weights`).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from physvid.files import atomic_write_text

from ..data.errors import DataError
from .budget import check_model_memory, check_model_sizes
from ..models import freeze_
from .checkpoint import load_checkpoint, load_state_into
from .config import Config, TrainConfig, dump_yaml
from .data import ClipDataset, crop_notes
from .distributed import DistInfo, init_distributed
from .errors import TrainConfigError, TrainError
from .trainer import Callback, Trainer, TrainResult, seed_everything

__all__ = ["train_decoder", "train_expert", "train_experts", "train_gating", "train_global", "train_end_to_end",
           "train_baseline", "run_pipeline", "fit", "init_weights"]


def _datasets(cfg: TrainConfig, paths: Sequence[str], model: nn.Module, expert: int | None = None):
    mc = model.config
    size, ch = (mc.height, mc.width), mc.in_channels
    if cfg.data.synthetic is not None:  # rendered on the fly, no files (issue 21)
        from .synthetic import for_expert, synthetic_datasets

        return synthetic_datasets(for_expert(cfg.data.synthetic, expert), cfg.data, size, ch, cfg.run.seed)
    train = ClipDataset(paths, cfg.data, "train", size, ch, seed=cfg.run.seed, dtype=torch.uint8)
    val = ClipDataset(paths, cfg.data, "val", size, ch, seed=cfg.run.seed, dtype=torch.uint8)
    return train, val


def _paths(cfg: TrainConfig, default: Sequence[str] | str | None, what: str) -> list[str]:
    """data.synthetic or data.path of the stage wins; otherwise the experiment's folder(s) for this stage."""
    if cfg.data.synthetic is not None:
        return [f"synthetic:{cfg.data.synthetic.get('property', 'all')}"]
    if cfg.data.path:
        return list(cfg.data.path)
    if isinstance(default, str):
        default = [default]
    if not default:
        raise TrainConfigError(f"no data for {what}: give {_OPTION.get(what, 'data.path')}")
    return list(default)


_OPTION = {"the decoder stage (D^all)": "--synthetic DIR,DIR,... (or --all DIR)",
           "the gating stage": "--real DIR", "the global stage": "--real DIR",
           "the end-to-end run": "--real DIR", "the baseline": "--real DIR (or data.path)"}


def check_resume_folder(out: str | Path, runs: Sequence[str] = ("checkpoints/last.pt",)) -> None:
    """``--resume`` promises a run to continue: refuse (TrainConfigError, exit 2) a folder holding none of ``runs``
    (glob patterns below ``out``) instead of silently training from scratch. The library's ``resume=True`` stays
    "continue what is there", which `stmoe reproduce` relies on for stages it has not started yet."""
    root = Path(out)
    if not any(any(root.glob(pattern)) for pattern in runs):
        raise TrainConfigError(f"--resume: {out} holds no run to continue (no {' or '.join(runs)} in it); drop "
                               "--resume to start a new run there")


def fit(model: nn.Module, cfg: TrainConfig, out: str | Path, paths: Sequence[str], *, stage: str,
        frozen: Sequence[nn.Module] = (), meta: dict | None = None, resume: bool = False,
        callbacks: Iterable[Callback] = (), dist_info: DistInfo | None = None,
        init: str | Path | None = None) -> TrainResult:
    """Train ``model`` on the train/val splits of ``paths`` into ``out`` (the loop every stage shares).

    ``init``: a checkpoint whose weights replace the model's before training (fine-tuning, see :func:`init_weights`);
    the optimiser and schedule start fresh. With ``resume`` and a ``last.pt`` in ``out``, the run continues from
    that instead (the weights it holds already started from ``init``).
    """
    expert = (meta or {}).get("expert") if stage == "experts" else None
    train, val = _datasets(cfg, paths, model, expert)
    if cfg.data.synthetic is not None:  # name the property this run renders (a per-expert list resolved)
        from .synthetic import for_expert

        paths = [f"synthetic:{for_expert(cfg.data.synthetic, expert).get('property', 'all')}"]
    elif (dist_info.rank if dist_info is not None else int(os.environ.get("RANK", "0"))) == 0:
        for note in crop_notes(train, "trains"):  # larger frames are cropped: never silently
            print(f"note: {note}", file=sys.stderr)
    meta = dict(meta or {})
    if init is not None:
        init_weights(model, init)
        meta["init_checkpoint"] = str(init)
    trainer = Trainer(model, cfg, out, train_set=train, val_set=val, stage=stage, frozen=frozen,
                      meta={**meta, "data": list(paths)}, dist_info=dist_info, callbacks=callbacks)
    return trainer.fit(resume=resume)


def init_weights(model: nn.Module, checkpoint: str | Path) -> None:
    """Load every weight of ``checkpoint`` into ``model`` (``--init``: fine-tuning from another run's weights).

    The same checks as ``--resume``, each one line: the checkpoint must exist and be an stmoe checkpoint
    (TrainError, exit 1), hold the same registered model (TrainConfigError, exit 2) and have a tensor of the same
    shape for every parameter and buffer (TrainConfigError naming the first that differs). Only weights are taken:
    no optimiser, schedule, epoch or RNG state.
    """
    ckpt = load_checkpoint(checkpoint)
    have, want = ckpt["model"]["name"], getattr(model, "model_name", "")
    if have != want:
        raise TrainConfigError(f"--init {checkpoint} holds a {have!r} model, this stage trains a {want!r}; start "
                               f"from a checkpoint of the same model (its config is in the run's config.yaml)")
    mine = model.state_dict()
    state = ckpt["model_state"]
    missing = [k for k in mine if k not in state]
    extra = [k for k in state if k not in mine]
    wrong = [k for k in mine if k in state and tuple(state[k].shape) != tuple(mine[k].shape)]
    if missing or extra or wrong:
        k = (wrong or missing or extra)[0]
        what = (f"{k} is {tuple(state[k].shape)} there, {tuple(mine[k].shape)} here" if wrong else
                f"{k} is {'missing there' if missing else 'not in this model'}")
        raise TrainConfigError(f"--init {checkpoint} does not fit this stage's {want} model ({what}; "
                               f"{len(missing) + len(extra) + len(wrong)} tensor(s) differ): use the same model.* "
                               f"size fields as the run that wrote it")
    load_state_into(model, state, f"the weights of {checkpoint}")


def _stage(config: Config, stage: str, expert: int | None = None) -> TrainConfig:
    """The TrainConfig of ``stage`` (of expert ``expert``), refused when its model cannot train in this machine's
    memory: checked before any data is read or any weight allocated."""
    cfg = config.expert(expert) if expert is not None else config.stage(stage)
    check_model_memory(cfg.model, stage if expert is None else f"expert {expert}")
    return cfg


def _build(cfg: TrainConfig) -> nn.Module:
    seed_everything(cfg.run.seed)  # identical initial weights on every rank and in every resumed process
    return cfg.model.build()


def _decoder_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k[len("decoder."):]: v for k, v in ckpt["model_state"].items() if k.startswith("decoder.")}


def _has_conv_decoder(config: Config) -> bool:
    return config.base.model.model_config.decoder != "identity"


def _require_mixture(config: Config, stage: str) -> None:
    if not config.is_mixture:
        raise TrainConfigError(f"stage {stage} needs a mixture model (model.name stmoe-id or stmoe-conv), got "
                               f"{config.base.model.name!r}; train single models with `stmoe train baseline`")


# --------------------------------------------------------------------------------------------------- stage 1
def train_decoder(config: Config, out: str | Path, *, resume: bool = False, callbacks: Iterable[Callback] = (),
                  dist_info: DistInfo | None = None, init: str | Path | None = None) -> Path | None:
    """Stage 1 (§3.2, local optimisation 1): F^0 + H on D^all; returns the checkpoint holding theta_H.

    D^all is ``config.d_all`` or, when empty, the synthetic folders D^1..D^m read together. Returns None for an
    identity decoder (STMoE-Id): H has no parameters, so there is nothing to train.
    """
    _require_mixture(config, "decoder")
    if not _has_conv_decoder(config):
        return None
    cfg = _stage(config, "decoder")
    paths = _paths(cfg, config.d_all or config.synthetic, "the decoder stage (D^all)")
    model = _build(cfg)
    result = fit(model, cfg, out, paths, stage="decoder", meta={"role": "F^0 and H"}, resume=resume,
                 callbacks=callbacks, dist_info=dist_info, init=init)
    return result.best_checkpoint


# --------------------------------------------------------------------------------------------------- stage 2
def train_expert(config: Config, k: int, out: str | Path, *, decoder_checkpoint: str | Path | None = None,
                 resume: bool = False, callbacks: Iterable[Callback] = (),
                 dist_info: DistInfo | None = None, init: str | Path | None = None) -> Path:
    """Stage 2 for expert k (§3.2, local optimisation 2): F^k alone on D^k with the shared H frozen."""
    _require_mixture(config, "experts")
    cfg = _stage(config, "experts", k)
    m = config.num_experts
    if not cfg.data.path and cfg.data.synthetic is None and len(config.synthetic) != m:
        raise TrainConfigError(f"the experts stage needs one synthetic folder per expert: the model has {m} experts "
                               f"({', '.join(config.base.model.model_config.experts)}), --synthetic gives "
                               f"{len(config.synthetic)}")
    paths = _paths(cfg, config.synthetic[k] if k < len(config.synthetic) else None, f"expert {k}")
    model = _build(cfg)
    frozen: list[nn.Module] = []
    meta: dict[str, Any] = {"expert": k, "expert_name": cfg.model.name}
    if _has_conv_decoder(config):
        if decoder_checkpoint is None:
            raise TrainConfigError("the experts of stmoe-conv share the decoder H of stage 1: give "
                                   "--decoder-checkpoint RUN/decoder/checkpoints/best.pt")
        state = _decoder_state(load_checkpoint(decoder_checkpoint))
        if not state:
            raise TrainError(f"{decoder_checkpoint} holds no decoder H (identity decoder?)")
        load_state_into(model.decoder, state, f"the decoder H of {decoder_checkpoint} into expert {k}")
        freeze_(model.decoder)
        frozen.append(model.decoder)
        meta["decoder_checkpoint"] = str(decoder_checkpoint)
    result = fit(model, cfg, out, paths, stage="experts", frozen=frozen, meta=meta, resume=resume,
                 callbacks=callbacks, dist_info=dist_info, init=init)
    return result.best_checkpoint


def train_experts(config: Config, out: str | Path, *, decoder_checkpoint: str | Path | None = None,
                  experts: Sequence[int] | None = None, resume: bool = False, callbacks: Iterable[Callback] = (),
                  dist_info: DistInfo | None = None, init: Sequence[str | Path] | None = None) -> list[Path]:
    """Stage 2 for experts ``experts`` (default: all), one after the other, into ``out/expert-<k>``.

    ``init``: one checkpoint per trained expert (in the order of ``experts``) to fine-tune from, or None."""
    _require_mixture(config, "experts")
    ks = list(range(config.num_experts)) if experts is None else list(experts)
    inits = list(init) if init else [None] * len(ks)
    if len(inits) != len(ks):
        raise TrainConfigError(f"--init: give one checkpoint per trained expert ({len(ks)}), got {len(inits)}")
    return [train_expert(config, k, Path(out) / f"expert-{k}", decoder_checkpoint=decoder_checkpoint, resume=resume,
                         callbacks=callbacks, dist_info=dist_info, init=i) for k, i in zip(ks, inits)]


# --------------------------------------------------------------------------------------------------- stage 3
def load_experts(model: nn.Module, expert_checkpoints: Sequence[str | Path],
                 decoder_checkpoint: str | Path | None = None) -> None:
    """Load stage-2 experts (and H: from ``decoder_checkpoint``, else from the experts' own frozen copy) into an STMoE."""
    names = model.config.experts
    if len(expert_checkpoints) != len(names):
        raise TrainConfigError(f"the model has {len(names)} experts ({', '.join(names)}); got "
                               f"{len(expert_checkpoints)} expert checkpoints")
    decoders = []
    for k, path in enumerate(expert_checkpoints):
        ckpt = load_checkpoint(path)
        if ckpt["model"]["name"] != names[k]:
            raise TrainConfigError(f"expert {k} of the model is {names[k]!r} but {path} holds a "
                                   f"{ckpt['model']['name']!r}")
        state = {key[len("experts.0."):]: v for key, v in ckpt["model_state"].items() if key.startswith("experts.0.")}
        load_state_into(model.experts[k], state, f"expert {k} from {path}")
        decoders.append((path, _decoder_state(ckpt)))
    if model.config.decoder == "identity":
        return
    if decoder_checkpoint is not None:
        state, source = _decoder_state(load_checkpoint(decoder_checkpoint)), decoder_checkpoint
    else:
        source, state = decoders[0]
    for path, other in decoders:
        if other.keys() != state.keys() or any(not torch.equal(other[k], state[k]) for k in state):
            raise TrainError(f"the decoder H in {path} differs from the one in {source}: experts must be trained with "
                             f"the same frozen H (stage 2 with one --decoder-checkpoint)")
    load_state_into(model.decoder, state, f"the decoder H from {source}")


def train_gating(config: Config, out: str | Path, *, expert_checkpoints: Sequence[str | Path],
                 decoder_checkpoint: str | Path | None = None, resume: bool = False,
                 callbacks: Iterable[Callback] = (), dist_info: DistInfo | None = None,
                 init: str | Path | None = None) -> Path:
    """Stage 3 (§3.2, global optimisation 1): the STGNs on real data, experts F^k and decoder H frozen."""
    _require_mixture(config, "gating")
    cfg = _stage(config, "gating")
    paths = _paths(cfg, config.real, "the gating stage")
    model = _build(cfg)
    load_experts(model, expert_checkpoints, decoder_checkpoint)
    frozen = [*model.experts, model.decoder]
    for m in frozen:
        freeze_(m)
    meta = {"expert_checkpoints": [str(p) for p in expert_checkpoints],
            "decoder_checkpoint": str(decoder_checkpoint) if decoder_checkpoint else None}
    result = fit(model, cfg, out, paths, stage="gating", frozen=frozen, meta=meta, resume=resume, callbacks=callbacks,
                 dist_info=dist_info, init=init)
    return result.best_checkpoint


# --------------------------------------------------------------------------------------------------- stage 4
def train_global(config: Config, out: str | Path, *, checkpoint: str | Path, resume: bool = False,
                 callbacks: Iterable[Callback] = (), dist_info: DistInfo | None = None,
                 init: str | Path | None = None) -> Path:
    """Stage 4 (§3.2, global optimisation 2): the whole STMoE from the stage-3 checkpoint, everything trainable."""
    _require_mixture(config, "global")
    cfg = _stage(config, "global")
    paths = _paths(cfg, config.real, "the global stage")
    model = _build(cfg)
    ckpt = load_checkpoint(checkpoint)
    if ckpt["model"]["name"] != cfg.model.name:
        raise TrainConfigError(f"{checkpoint} holds a {ckpt['model']['name']!r}, the config a {cfg.model.name!r}")
    load_state_into(model, ckpt["model_state"], f"the STMoE from {checkpoint}")
    result = fit(model, cfg, out, paths, stage="global", meta={"init_checkpoint": str(checkpoint)}, resume=resume,
                 callbacks=callbacks, dist_info=dist_info, init=init)
    return result.best_checkpoint


# --------------------------------------------------------------------------------------------------- ablations
def _train_on_real(config: Config, stage: str, what: str, out, resume, callbacks, dist_info, init) -> Path:
    """A stage that builds its model (from scratch, or from ``init``'s weights) and trains all of it on the real data."""
    cfg = _stage(config, stage)
    paths = _paths(cfg, config.real, what)
    return fit(_build(cfg), cfg, out, paths, stage=stage, resume=resume, callbacks=callbacks,
               dist_info=dist_info, init=init).best_checkpoint


def train_end_to_end(config: Config, out: str | Path, *, resume: bool = False, callbacks: Iterable[Callback] = (),
                     dist_info: DistInfo | None = None, init: str | Path | None = None) -> Path:
    """The STMoE architecture trained only on the real data, from scratch (paper Table 5, "end-to-end")."""
    return _train_on_real(config, "end_to_end", "the end-to-end run", out, resume, callbacks, dist_info, init)


def train_baseline(config: Config, out: str | Path, *, resume: bool = False, callbacks: Iterable[Callback] = (),
                   dist_info: DistInfo | None = None, init: str | Path | None = None) -> Path:
    """Any registered model alone (``stages.baseline.model``, default MIM) on the real data (§4 baselines).

    With ``init`` (a checkpoint of the same model, e.g. one trained on D^all) it fine-tunes those weights with a
    fresh optimiser and schedule: the paper's "MIM w/ D^all" row."""
    return _train_on_real(config, "baseline", "the baseline", out, resume, callbacks, dist_info, init)


# --------------------------------------------------------------------------------------------------- pipeline
def finished_checkpoint(run_dir: Path) -> Path | None:
    """The best checkpoint of a finished stage folder (its result.json names one that exists), or None: the one test
    of "is this stage done" that the pipeline and `stmoe reproduce` share."""
    result = run_dir / "result.json"
    if not result.is_file():
        return None
    best = Path(json.loads(result.read_text())["best_checkpoint"])
    return best if best.is_file() else None


def _check_pipeline_data(config: Config) -> None:
    """Fail before stage 1 (not after an hour of it) when a folder of a later stage is missing."""
    m = config.num_experts
    if not config.expert(0).data.path and config.expert(0).data.synthetic is None and len(config.synthetic) != m:
        raise TrainConfigError(f"the pipeline needs one synthetic folder per expert: the model has {m} experts "
                               f"({', '.join(config.base.model.model_config.experts)}), --synthetic gives "
                               f"{len(config.synthetic)}")
    gating = config.stage("gating").data
    if not gating.path and gating.synthetic is None and not config.real:
        raise TrainConfigError("the pipeline needs the real dataset for stages 3 and 4: give --real DIR")
    for p in [*config.synthetic, *config.d_all, *([config.real] if config.real else [])]:
        if not Path(p).exists():
            raise DataError(f"{p} does not exist (give folders written by `physvid generate` or `stmoe prepare`)")


def run_pipeline(config: Config, out: str | Path, *, resume: bool = False, callbacks: Iterable[Callback] = (),
                 dist_info: DistInfo | None = None) -> dict[str, Any]:
    """Stages 1-4 into ``out/{decoder, experts/expert-<k>, gating, global}``; returns the checkpoint of each.

    Finished stages (result.json present) are skipped, so re-running the same command after a crash continues
    where it stopped; a stage interrupted mid-way continues from its last checkpoint when ``resume`` is true.
    """
    _require_mixture(config, "pipeline")
    _check_pipeline_data(config)
    check_model_sizes(config)  # every stage's model now, not stage 4's after hours of stages 1-3
    out = Path(out)
    info = dist_info if dist_info is not None else init_distributed(config.base.run.device)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "pipeline.yaml", dump_yaml(config.to_dict()))
    kw = dict(callbacks=callbacks, dist_info=info)
    ckpts: dict[str, Any] = {}

    def stage_dir(name: str) -> Path:
        return out / name

    done = finished_checkpoint
    decoder = None
    if _has_conv_decoder(config):
        decoder = done(stage_dir("decoder")) or train_decoder(config, stage_dir("decoder"), resume=resume, **kw)
    ckpts["decoder"] = str(decoder) if decoder else None
    experts = []
    for k in range(config.num_experts):
        d = stage_dir("experts") / f"expert-{k}"
        experts.append(done(d) or train_expert(config, k, d, decoder_checkpoint=decoder, resume=resume, **kw))
    ckpts["experts"] = [str(p) for p in experts]
    gating = done(stage_dir("gating")) or train_gating(config, stage_dir("gating"), expert_checkpoints=experts,
                                                       decoder_checkpoint=decoder, resume=resume, **kw)
    ckpts["gating"] = str(gating)
    final = done(stage_dir("global")) or train_global(config, stage_dir("global"), checkpoint=gating, resume=resume,
                                                      **kw)
    ckpts["global"] = str(final)
    ckpts["final"] = str(final)
    if info.is_main:
        atomic_write_text(out / "pipeline.json", json.dumps(ckpts, indent=2) + "\n")
    return ckpts
