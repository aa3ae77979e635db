"""`stmoe reproduce`: generate the data, train every row of an experiment (resumably), evaluate, tabulate.

Folder layout of ``out`` (one experiment, or ``all`` of them sharing data and trained networks)::

    reproduce.json                 experiment, profile, seeds (a second experiment in the same folder is refused)
    data/                          physvid datasets: D^k per noise ratio, Dynamic MNIST train / test, real clips
    runs/local-<model>-noise<r>-s<seed>/{decoder, experts/expert-<k>}    local optimisation, shared by every row
    runs/synthetic-<model>-noise<r>-s<seed>/pretrain                     MIM w/ D^all's pre-training, shared
    runs/<row key>-s<seed>/{baseline | real | gating, global | end_to_end}
    rows/<row key>-s<seed>.json    evaluation of one trained row (its existence = finished), shared by experiments;
                                   it names the machine, date and profile settings it was made with
    <experiment>/results.json, table.md, *.png   the table, the paper's numbers beside ours, the figures

Every stage folder holds checkpoints/last.pt and result.json: a finished stage is skipped, an interrupted one
continues from its last checkpoint, so killing and re-running the same command (with ``--resume``) loses at most one
epoch. Nothing here selects on the test set: checkpoints are chosen on the validation split.
"""
from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from physvid.files import atomic_write_text

from ..train.errors import TrainError
from .clips import Clips, load_clips
from .spec import (ALL, CLIP, EXPERIMENTS, LOCAL_LOSS, MNIST, PROFILES, REAL_LOSS, Profile, Recipe, Row,
                   dynamic_mnist_config, experiment_rows, mixed_config, real_sources, recipes, synthetic_config)



class ReproduceError(TrainError):
    """Bad arguments or an unusable output folder (exit 2)."""

    exit_code = 2


def default_data_root() -> Path:
    """../shared/data next to the repository (where the tests and examples read third-party data)."""
    return Path(__file__).resolve().parents[3] / "shared" / "data"


# --------------------------------------------------------------------------------------------------- budgets
def budget(steps: int, n_sequences: int, batch_size: int) -> dict[str, int]:
    """optim.epochs and optim.max_steps_per_epoch that give ~``steps`` optimiser steps over ``n_sequences``."""
    per_epoch = max(1, math.ceil(n_sequences / batch_size))
    epochs = max(1, math.ceil(steps / per_epoch))
    return {"epochs": epochs, "max_steps_per_epoch": max(1, math.ceil(steps / epochs))}


def time_split(n_clips: int, stride: int) -> dict[str, list[int]]:
    """Train / val / test clip ranges of one real video in time order (test last, 20 %; val 10 %), with a gap of
    clips between them so that no test frame also appears in a training or validation clip (clips of l + n frames
    every ``stride`` frames overlap their next ceil((l + n) / stride) - 1 neighbours)."""
    gap = math.ceil(sum(CLIP) / stride) - 1
    n_test = max(1, round(0.2 * n_clips))
    n_val = max(1, round(0.1 * n_clips))
    test0 = n_clips - n_test
    val0 = test0 - gap - n_val
    train1 = val0 - gap
    if train1 < 1:
        raise ReproduceError(f"{n_clips} clips (stride {stride}) are too few for a train / val / test split with "
                             f"{gap}-clip gaps")
    return {"train_range": [0, train1], "val_range": [val0, val0 + n_val], "test_range": [test0, n_clips]}


# --------------------------------------------------------------------------------------------------- data
class Data:
    """The datasets of one reproduction folder, generated on first use (physvid resumes a killed generation)."""

    def __init__(self, root: Path, profile: Profile, data_root: Path, log: Callable[[str], None],
                 clips: Clips | None = None) -> None:
        self.root, self.p, self.data_root, self.log = root, profile, data_root, log
        self.sources = real_sources(clips)  # name -> (path, kind, frames between clips)

    def _generate(self, name: str, config: dict, n: int) -> str:
        import physvid

        out = self.root / name
        manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
        if manifest.get("shards") and str(manifest.get("format_version", "")).startswith("1."):
            # Finished, possibly by an earlier physvid of the same major format (1.0 before the per-frame states of
            # 1.1: the same videos, fewer parameters): reused as it is, so a reproduction folder outlives upgrades.
            return str(out)
        if not manifest.get("shards"):
            self.log(f"data: generating {name} ({n} sequences)")
        physvid.generate(physvid.RenderConfig.from_dict(config), n, out, workers=1, compression="none",
                         shard_size=max(1, min(n, 1000)))
        return str(out)

    def synthetic(self, noise: float) -> list[str]:
        """D^translation, D^rotation, D^intensity at noise ratio ``noise`` (paper §3.2; 10 frames, like the real clips)."""
        return [self._generate(f"{prop}-noise{noise:g}", synthetic_config(self.p, prop, noise), self.p.n_syn)
                for prop in ("translation", "rotation", "intensity")]

    def mixed(self, noise: float) -> str:
        """physvid `mixed` clips with property maps (each pixel's physics) at noise ratio ``noise``, for the recipe
        whose gate learns from the known physics (spec.Recipe.gate_target); same motion ranges as the D^k."""
        return self._generate(f"mixed-noise{noise:g}", mixed_config(self.p, noise), self.p.n_syn)

    def mnist(self) -> Path:
        path = self.data_root / MNIST
        if not path.is_file():
            raise ReproduceError(f"Dynamic MNIST needs the MNIST test digits at {path} (put the third-party data in "
                                 f"../shared/data, see README), or give --data-root DIR")
        return path

    def dynamic_mnist(self, split: str) -> str:
        """Train (+ validation, digits 0:9000) or test (digits 9000:10000, property maps) Dynamic MNIST (§4.1)."""
        n = max(self.p.n_train, *self.p.datasizes) + self.p.n_val if split == "train" else self.p.n_test
        return self._generate(f"dynamic-mnist-{split}", dynamic_mnist_config(self.p, split, self.mnist()), n)

    def real(self, name: str) -> str:
        """A real clip set of ../shared/data prepared at the profile's size (one folder, split in time order)."""
        from ..data.prepare import prepare_dataset

        rel, kind, stride = self.sources[name]
        src = self.data_root / rel
        if kind == "dataset":  # a user's clips already prepared (stmoe/reproduce/clips.py): used as they are
            return str(src)
        if not src.exists():
            raise ReproduceError(f"experiment 'real' needs {src} (put the third-party data in ../shared/data, "
                                 f"see README), or give --data-root DIR")
        out = self.root / f"real-{name}"
        if not (out / "manifest.json").is_file():
            self.log(f"data: preparing {name} from {src}")
            prepare_dataset(str(src), out, clip_length=sum(CLIP), stride=stride or self.p.real_clip_stride,
                            size=self.p.size, kind=kind, allow_upscale=True, overwrite=True)
        return str(out)


# --------------------------------------------------------------------------------------------------- one row
class RowRunner:
    """Trains and evaluates the rows of one reproduction folder.

    ``options``: run settings that change speed, not results -- ``compile`` (run.compile), ``loader_workers``
    (data.num_workers), ``checkpoint_minutes`` (run.checkpoint_minutes).
    """

    def __init__(self, out: Path, profile: Profile, data: Data, log: Callable[[str], None],
                 options: dict | None = None) -> None:
        self.out, self.p, self.data, self.log = out, profile, data, log
        self.options = dict(options or {})

    # ------------------------------------------------------------------ configs
    def _model(self, row: Row, name: str | None = None) -> dict:
        name = name or row.model
        m = {"name": name, **self.p.model_fields}
        extra = {"phy_channels": self.p.phy_channels, "phy_kernel": self.p.phy_kernel}
        if name == "phydnet":
            m.update(extra)
        if name.startswith("stmoe"):
            m.update({"gate_channels": self.p.gate_channels, "attention": row.attention})
        return m

    def _real(self, row: Row) -> tuple[str, str, dict]:
        """(train/val folder, test folder, data section) of the row's real dataset."""
        p = self.p
        if row.real == "dynamic-mnist":
            train = self.data.dynamic_mnist("train")
            n_train = row.n_train or p.n_train
            first_val = max(p.n_train, *p.datasizes)
            section = {"train_range": [0, n_train], "val_range": [first_val, first_val + p.n_val],
                       "test_range": [0, 0]}
            return train, self.data.dynamic_mnist("test"), section
        folder = self.data.real(row.real)
        stride = self.data.sources[row.real][2] or p.real_clip_stride
        return folder, folder, time_split(self._count(folder, 1.0), stride)

    def config(self, row: Row, seed: int, recipe: Recipe | None = None) -> Any:
        """The stmoe Config document of ``row`` trained with ``recipe`` (default: its first candidate)."""
        from ..train.config import Config

        p = self.p
        recipe = recipe or recipes(row, p)[0]
        train, _, real_data = self._real(row)
        n_real = (row.n_train or p.n_train) if row.real == "dynamic-mnist" else self._count(train, 0.7)
        half = budget(max(1, p.real_steps // 2), n_real, p.batch_size)
        syn = budget(p.syn_steps, int(0.9 * p.n_syn), p.batch_size)
        syn_data = {"split": [0.9, 0.1, 0.0]}
        doc = {
            "model": self._model(row),
            "data": {"input_frames": CLIP[0], "output_frames": CLIP[1], "batch_size": p.batch_size,
                     **({"num_workers": self.options["loader_workers"]} if self.options.get("loader_workers") else {})},
            # Every checkpoint of a table is chosen by the validation MSE of its n predicted frames, the metric the
            # tables report (stmoe.train.config.OptimConfig.monitor).
            "optim": {"lr": p.lr, "schedule": "cosine", "grad_clip": 1.0, "monitor": "mse"},
            "loss": REAL_LOSS,
            "run": {"seed": seed, "threads": p.threads, "progress": "off", "tensorboard": "off", "log_every": 50,
                    **({"compile": True} if self.options.get("compile") else {}),
                    **({"checkpoint_minutes": self.options["checkpoint_minutes"]}
                       if self.options.get("checkpoint_minutes") else {})},
            "real": train,
            "stages": {
                "decoder": {"model": {"name": "mim"}, "loss": LOCAL_LOSS, "optim": syn, "data": syn_data},
                "experts": {"loss": LOCAL_LOSS, "optim": syn, "data": syn_data},
                "gating": {"optim": {**half, "lr": recipe.lr}, "data": real_data},
                "global": {"optim": {**half, "lr": recipe.global_lr or recipe.lr}, "data": real_data},
                "end_to_end": {"optim": {**budget(p.real_steps, n_real, p.batch_size), "lr": recipe.lr},
                               "data": real_data},
                "baseline": {"model": self._model(row),
                             "optim": {**budget(p.real_steps, n_real, p.batch_size), "lr": recipe.lr},
                             "data": real_data},
            },
        }
        if row.kind in ("stmoe", "pretrained"):
            doc["synthetic"] = self.data.synthetic(row.noise)
        if row.kind == "pretrained":  # the pre-training on D^all: the profile's lr; the recipe is the fine-tuning's
            doc["stages"]["baseline"] = {**doc["stages"]["baseline"], "optim": {**syn, "lr": p.lr}}
        if recipe.competition:
            doc["stages"]["gating"]["loss"] = {"competition_weight": recipe.competition}
        if recipe.gate_target:  # the gating stage's half of the budget is spent on physvid clips instead
            gate_data = {"path": [self.data.mixed(row.noise)], "split": [0.9, 0.1, 0.0], "train_range": None,
                         "val_range": None, "test_range": None}
            doc["stages"]["gating"] = {"optim": {**budget(max(1, p.real_steps // 2), int(0.9 * p.n_syn),
                                                          p.batch_size), "lr": recipe.lr},
                                       "data": gate_data, "loss": {"gate_target_weight": 1.0}}
        return Config(doc)

    @staticmethod
    def _count(folder: str, fraction: float) -> int:
        total = json.loads((Path(folder) / "manifest.json").read_text())["total_sequences"]
        return max(1, int(round(total * fraction)))

    def prepare(self, row: Row) -> None:
        """Generate or prepare every dataset ``row`` reads."""
        self._real(row)
        if row.kind in ("stmoe", "pretrained"):
            self.data.synthetic(row.noise)
        if any(r.gate_target for r in recipes(row, self.p)):
            self.data.mixed(row.noise)

    @staticmethod
    def affinity(row: Row, seed: int) -> str:
        """Rows with equal affinity share trained networks (the local stage, or MIM w/ D^all's pre-training): these
        are trained once, before any of the rows that read them (``local``)."""
        if row.kind == "stmoe":
            return f"local-{row.model}-noise{row.noise:g}-s{seed}"
        if row.kind == "pretrained":
            return f"synthetic-{row.model}-noise{row.noise:g}-s{seed}"
        return f"{row.key}-s{seed}"

    @staticmethod
    def has_local(row: Row) -> bool:
        """Whether ``row`` reads networks that other rows share (``affinity``)."""
        return row.kind in ("stmoe", "pretrained")

    # ------------------------------------------------------------------ training
    def _stage(self, folder: Path, fn: Callable[[], Path | None]) -> Path | None:
        """The finished checkpoint in ``folder``, or ``fn()`` (which trains it; resumes an interrupted one)."""
        from ..train import stages

        done = stages.finished_checkpoint(folder)
        if done is not None:
            return done
        self.log(f"train: {folder.relative_to(self.out)}")
        return fn()

    def local(self, row: Row, seed: int) -> tuple[Path | None, list[Path | None]]:
        """Train (or find) the networks ``row`` shares with the rows of its ``affinity``; they do not depend on the
        recipe. An STMoE: (F^0/H decoder or None, the experts F^k); MIM w/ D^all: (its pre-training on D^all, [])."""
        from ..train import stages

        cfg = self.config(row, seed)
        local = self.out / "runs" / self.affinity(row, seed)
        kw = {"resume": True}
        if row.kind == "pretrained":  # the pre-training does not depend on the real data or its size
            pre_cfg = cfg.replace({"stages.baseline.data.path": list(cfg.synthetic),
                                   "stages.baseline.data.split": [0.9, 0.1, 0.0],
                                   "stages.baseline.data.train_range": None, "stages.baseline.data.val_range": None,
                                   "stages.baseline.data.test_range": None})
            return self._stage(local / "pretrain", lambda: stages.train_baseline(pre_cfg, local / "pretrain", **kw)), []
        decoder = None
        if cfg.base.model.model_config.decoder != "identity":
            decoder = self._stage(local / "decoder", lambda: stages.train_decoder(cfg, local / "decoder", **kw))
        experts = [self._stage(local / "experts" / f"expert-{k}",
                               lambda k=k: stages.train_expert(cfg, k, local / "experts" / f"expert-{k}",
                                                               decoder_checkpoint=decoder, **kw))
                   for k in range(cfg.num_experts)]
        return decoder, experts

    def train(self, row: Row, seed: int, recipe: Recipe) -> Path:
        """The best (validation) checkpoint of ``row`` trained with ``seed`` and ``recipe``; finished stages are
        reused (the local stage and MIM w/ D^all's pre-training do not depend on the recipe: shared by all)."""
        from ..train import stages

        cfg = self.config(row, seed, recipe)
        run = self.out / "runs" / f"{row.key}-{recipe.name}-s{seed}"
        kw = {"resume": True}
        stage = self._stage
        if row.kind == "baseline":
            return stage(run / "baseline", lambda: stages.train_baseline(cfg, run / "baseline", **kw))
        if row.kind == "end_to_end":
            return stage(run / "end_to_end", lambda: stages.train_end_to_end(cfg, run / "end_to_end", **kw))
        if row.kind == "pretrained":  # MIM w/ D^all: pre-train on the synthetic D^k together, then the real data
            pre, _ = self.local(row, seed)
            real_cfg = self.config(row.replace(kind="baseline"), seed, recipe)
            return stage(run / "real", lambda: self._finetune(real_cfg, pre, run / "real"))
        # stmoe: local optimisation (shared by every row with the same model, noise and seed), then global
        decoder, experts = self.local(row, seed)
        if row.attention == "none":  # no gating network to train: the global stage starts from the experts
            return stage(run / "global", lambda: self._global_from_experts(cfg, experts, decoder, run / "global"))
        gating = stage(run / "gating", lambda: stages.train_gating(cfg, run / "gating", expert_checkpoints=experts,
                                                                     decoder_checkpoint=decoder, **kw))
        return stage(run / "global", lambda: stages.train_global(cfg, run / "global", checkpoint=gating, **kw))

    @staticmethod
    def _finetune(cfg: Any, checkpoint: Path, out: Path) -> Path:
        """MIM w/ D^all's second step: the public fine-tuning path (`stmoe train baseline --init CKPT`)."""
        from ..train import stages

        return stages.train_baseline(cfg, out, init=checkpoint, resume=True)

    @staticmethod
    def _global_from_experts(cfg: Any, experts: list, decoder: Path | None, out: Path) -> Path:
        from ..train.stages import _build, _paths, fit, load_experts

        tc = cfg.stage("global")
        model = _build(tc)
        load_experts(model, experts, decoder)
        return fit(model, tc, out, _paths(tc, cfg.real, "the global stage"), stage="global",
                   meta={"expert_checkpoints": [str(p) for p in experts]}, resume=True).best_checkpoint

    def search(self, row: Row, seed: int, chosen: str | None = None) -> tuple[Path, Recipe, list[dict]]:
        """Train every candidate recipe of ``row`` (or only ``chosen``, by name) and keep the one whose selected
        checkpoint has the lowest validation MSE; the test split is not read here. Returns (checkpoint, recipe,
        one record per candidate trained)."""
        candidates = recipes(row, self.p)
        if chosen is not None:
            candidates = tuple(r for r in candidates if r.name == chosen)
            if not candidates:
                raise ReproduceError(f"row {row.label!r}: seed 0 chose recipe {chosen!r}, which this version does not "
                                     f"offer; choose another --out")
        tried = []
        for recipe in candidates:
            ckpt = self.train(row, seed, recipe)
            tried.append({"recipe": recipe.name, "describe": recipe.describe(), **_selected_scores(ckpt),
                          "checkpoint": str(ckpt.relative_to(self.out))})
        best = min(range(len(tried)), key=lambda i: tried[i]["val_mse"])  # ties: the earlier candidate
        return self.out / tried[best]["checkpoint"], candidates[best], tried

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, row: Row, seed: int, checkpoint: Path) -> dict:
        from ..train.evaluate import evaluate

        _, test, _ = self._real(row)
        split = "all" if row.real == "dynamic-mnist" else "test"  # real sets: the config's gapped test range
        result = evaluate(checkpoint, test, split=split)
        return {"row": row.label, "key": row.key, "seed": seed, "kind": row.kind, "model": row.model,
                "real": row.real, "checkpoint": str(checkpoint.relative_to(self.out)), "mean": result["mean"],
                "per_frame": result.get("per_frame"), "alignment": result.get("alignment"),
                "clips": result.get("count"), "paper": row.paper, "copy_last_frame": result.get("copy_last_frame")}


def _selected_scores(checkpoint: Path) -> dict:
    """Validation MSE (and loss) of the epoch whose checkpoint the run selected, from its metrics.jsonl."""
    run_dir = checkpoint.parent.parent
    result = json.loads((run_dir / "result.json").read_text())
    records = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    rec = next(r for r in records if r["epoch"] == result["best_epoch"])
    if "val_mse" not in rec:
        raise ReproduceError(f"{run_dir} has no validation split: a recipe cannot be chosen without one")
    return {"val_mse": rec["val_mse"], "val_loss": rec.get("val_loss"), "best_epoch": result["best_epoch"],
            "epochs": result["epochs"]}


# --------------------------------------------------------------------------------------------------- entry point
def _check_out(out: Path, experiment: str, profile: str, resume: bool, settings: dict) -> None:
    marker = out / "reproduce.json"
    if marker.is_file():
        try:
            held = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            raise ReproduceError(f"{marker} is unreadable; choose another --out") from None
        held_names = set(str(held.get("experiment", "")).split(","))
        wanted = set(ALL) if experiment == "all" else set(experiment.split(","))
        if held.get("experiment") == "all":
            held_names = set(ALL)
        # --resume may extend a folder to more experiments (their rows then share its data and trained networks)
        extends = resume and held_names <= wanted
        if (held.get("experiment") != experiment and not extends) or held.get("profile") != profile:
            raise ReproduceError(f"{out} holds the reproduction {held.get('experiment')!r} with profile "
                                 f"{held.get('profile')!r}; choose another --out for {experiment!r} ({profile}), or "
                                 f"--resume with a list that includes it")
        if json.loads(json.dumps(settings)) != held.get("profile_settings"):
            raise ReproduceError(f"{out} was made with other settings of profile {profile!r} (an older version?); "
                                 f"choose another --out")
        if not resume:
            raise ReproduceError(f"{out} already holds this reproduction; pass --resume to continue it (finished "
                                 f"runs are skipped) or choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise ReproduceError(f"{out} is not empty and holds no reproduction; choose an empty or new --out")


def reproduce(experiment: str, profile: str, out: str | Path, *, seeds: int = 1, resume: bool = False,
              data_root: str | Path | None = None, jobs: int | None = None, steps_scale: float = 1.0,
              compile: bool = False, loader_workers: int = 0, checkpoint_minutes: float | None = None,
              log: Callable[[str], None] = print, clips: Sequence[str] = (), rows: Sequence[str] = (),
              rows_from: str | Path | None = None) -> dict[str, Any]:
    """Run ``experiment`` (a key of EXPERIMENTS, or "all") at ``profile`` into ``out``; returns {experiment: results}.

    ``jobs`` worker processes train rows side by side (default: the profile's; on one GPU they share it): networks
    that several rows share (an STMoE's local stage, MIM w/ D^all's pre-training) first, once each, then every row
    as soon as what it reads is trained, the heaviest first. ``steps_scale`` multiplies the
    profile's optimiser steps (real_steps, syn_steps; recorded with the folder, so a folder is never extended with
    another budget): a short run of a big profile. ``compile``, ``loader_workers`` and ``checkpoint_minutes``
    (default 5 for the gpu and paper profiles, per epoch otherwise) change speed only.

    ``rows_from``: a ``rows/`` folder of an earlier reproduction (or a copy of it, e.g. committed records) whose finished
    (row, seed) evaluations are taken instead of retrained, when they were made with the same profile settings: a
    reproduction too long for one machine's session continues on another (seeds 1.. need only seed 0's record, which
    names its chosen recipe). Taken rows keep their own machine and date, and the table lists every machine.

    Raises ReproduceError (exit 2) for an unknown experiment or profile, seeds < 1, missing ../shared/data for the
    data an experiment needs, an --out that holds another reproduction, or a ``rows_from`` that is not a folder.
    """
    from .report import write_report

    wanted = [e.strip() for e in str(experiment).split(",") if e.strip()]  # "table5,table6": one folder, shared runs
    for e in wanted or [experiment]:
        if e not in (*EXPERIMENTS, "all"):
            raise ReproduceError(f"unknown experiment {e!r}; allowed: {', '.join((*EXPERIMENTS, 'all'))} "
                                 f"(or a comma list)")
    if profile not in PROFILES:
        raise ReproduceError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ReproduceError(f"--seeds must be an integer >= 1, got {seeds!r}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= 64):
        raise ReproduceError(f"--jobs must be an integer in [1, 64], got {jobs!r}")
    if isinstance(steps_scale, bool) or not isinstance(steps_scale, (int, float)) or not 0 < steps_scale <= 100:
        raise ReproduceError(f"--steps-scale must be a number in (0, 100], got {steps_scale!r}")
    if isinstance(loader_workers, bool) or not isinstance(loader_workers, int) or not 0 <= loader_workers <= 64:
        raise ReproduceError(f"--loader-workers must be an integer in [0, 64], got {loader_workers!r}")
    if rows_from is not None and not Path(rows_from).is_dir():
        raise ReproduceError(f"--rows-from {rows_from}: no such folder (give the rows/ folder of a reproduction)")
    out = Path(out)
    root = Path(data_root) if data_root is not None else default_data_root()
    prof = PROFILES[profile]
    if steps_scale != 1:
        prof = dataclasses.replace(prof, real_steps=max(2, round(prof.real_steps * steps_scale)),
                                   syn_steps=max(1, round(prof.syn_steps * steps_scale)))
    if checkpoint_minutes is None:
        checkpoint_minutes = 5.0 if profile in ("gpu", "paper") else 0.0
    options = {"compile": bool(compile), "loader_workers": loader_workers, "checkpoint_minutes": checkpoint_minutes}
    names = ALL if "all" in wanted else tuple(dict.fromkeys(wanted))
    experiment = "all" if "all" in wanted else ",".join(names)
    if ("real" in names) and not root.is_dir():
        raise ReproduceError(f"experiment 'real' needs the third-party clips in {root} (see README); none there")
    from .clips import clip_entries, save_clips
    entries = clip_entries(clips, out) if clips or "clips" in names else None  # checked before anything is written
    _check_out(out, experiment, profile, resume, asdict(prof))
    out.mkdir(parents=True, exist_ok=True)
    save_clips(out, entries, rows)
    own = load_clips(out)  # the user's clips (experiment `clips`), as saved in the folder
    atomic_write_text(out / "reproduce.json", json.dumps({"experiment": experiment, "profile": profile, "seeds": seeds,
                                                    "profile_settings": asdict(prof)}, indent=2) + "\n")
    data = Data(out / "data", prof, root, log, own)
    runner = RowRunner(out, prof, data, log, options)
    results: dict[str, Any] = {}
    # Every (row, seed) still to train, once, even when several experiments list it (table5's two-step row is
    # table1's STMoE-Id); a row is finished once its evaluation JSON exists in out/rows.
    rows_dir = out / "rows"
    rows_dir.mkdir(exist_ok=True)
    todo: dict[tuple[str, int], Row] = {}
    for name in names:
        for row in experiment_rows(name, prof, own):
            for seed in range(seeds):
                if not (rows_dir / f"{row.key}-s{seed}.json").is_file():
                    if rows_from is None or not _take_row(Path(rows_from), rows_dir, row, seed, prof, log):
                        todo.setdefault((row.key, seed), row)
    start = time.perf_counter()
    for row in todo.values():  # all data first: workers only read it
        runner.prepare(row)
    jobs = prof.jobs if jobs is None else jobs
    # Two passes: seed 0 searches every row's recipe on validation, then seeds 1.. train the recipes it chose.
    for first_pass in (True, False):
        tasks = [(row, seed) for (_, seed), row in todo.items() if (seed == 0) == first_pass]
        if jobs <= 1 or len(tasks) <= 1:
            _run_tasks(runner, tasks, log)
        else:
            _run_parallel(out, prof, root, tasks, jobs, log, options)
    for name in names:
        # The evaluation is shared; the label and the paper's numbers are this experiment's.
        evaluated = [{**json.loads((rows_dir / f"{row.key}-s{seed}.json").read_text()), "row": row.label,
                      "paper": row.paper} for row in experiment_rows(name, prof, own) for seed in range(seeds)]
        here = machine()
        meta = {"experiment": name, "description": EXPERIMENTS[name], "profile": asdict(prof), "seeds": seeds,
                "machine": here, "machines": sorted({e.get("machine", here) for e in evaluated}), "jobs": jobs,
                "date": time.strftime("%Y-%m-%d"), "seconds_this_call": round(time.perf_counter() - start, 1)}
        results[name] = write_report(out / name, name, prof, evaluated, meta, runner)
    return results


def _run_tasks(runner: RowRunner, tasks: list[tuple[Row, int]], log: Callable[[str], None]) -> None:
    """Train and evaluate each (row, seed); the evaluation JSON is written last (atomically): it marks the row done."""
    for row, seed in tasks:
        path = runner.out / "rows" / f"{row.key}-s{seed}.json"
        if path.is_file():
            continue
        t0 = time.perf_counter()
        chosen = None
        if seed > 0:  # seed 0 searched; the other seeds train its choice
            first = runner.out / "rows" / f"{row.key}-s0.json"
            if not first.is_file():
                raise ReproduceError(f"row {row.label!r}, seed {seed}: seed 0 has not chosen its recipe yet")
            chosen = json.loads(first.read_text())["recipe"]["name"]
        ckpt, recipe, tried = runner.search(row, seed, chosen)
        rec = runner.evaluate(row, seed, ckpt)  # the test split, once, after the choice
        rec["recipe"] = {"name": recipe.name, "describe": recipe.describe(), **asdict(recipe)}
        rec["search"] = tried
        rec["selected_by"] = "validation MSE of the selected checkpoint" + ("" if seed == 0 else " (seed 0's choice)")
        rec["train_eval_seconds"] = round(time.perf_counter() - t0, 1)
        rec.update(machine=machine(), date=time.strftime("%Y-%m-%d"), profile_settings=asdict(runner.p))
        atomic_write_text(path, json.dumps(rec, indent=2) + "\n")
        log(f"{row.label} ({row.real}, seed {seed}, {recipe.name}): MSE {rec['mean'].get('mse', float('nan')):.3f} "
            f"SSIM {rec['mean'].get('ssim', float('nan')):.4f} ({rec['train_eval_seconds']:.0f} s)")


def _take_row(source: Path, rows_dir: Path, row: Row, seed: int, prof: Profile, log: Callable[[str], None]) -> bool:
    """Copy the finished evaluation of (row, seed) from ``source`` into ``rows_dir`` if it was made with the same
    profile settings; returns whether it was taken. A record of other settings (or of a version that did not record
    them) is retrained, never mixed into the table."""
    src = source / f"{row.key}-s{seed}.json"
    if not src.is_file():
        return False
    try:
        rec = json.loads(src.read_text())
    except (OSError, json.JSONDecodeError):
        raise ReproduceError(f"--rows-from: {src} is not a readable row record") from None
    if not isinstance(rec, dict) or rec.get("key") != row.key or rec.get("seed") != seed:
        raise ReproduceError(f"--rows-from: {src} does not hold row {row.key!r}, seed {seed}")
    if rec.get("profile_settings") != json.loads(json.dumps(asdict(prof))):
        log(f"{row.label} (seed {seed}): {src} was made with other profile settings; trained here instead")
        return False
    atomic_write_text(rows_dir / src.name, json.dumps(rec, indent=2) + "\n")
    log(f"{row.label} (seed {seed}): taken from {src} ({rec.get('machine', '?')}, {rec.get('date', '?')})")
    return True


# Rough cost of a row in "one MIM trained for the budget" units: the heaviest rows start first.
_COST = {"stmoe": 6.0, "pretrained": 2.0, "end_to_end": 3.0}
_BASELINE_COST = {"mim": 1.0, "predrnnpp": 1.0, "phydnet": 0.5}


def _cost(row: Row) -> float:
    return _COST.get(row.kind, _BASELINE_COST.get(row.model, 0.4))


def _exit_with_parent(parent: int) -> None:
    """A worker whose parent died (kill -9 of `stmoe reproduce`) stops too: an orphan would keep training into the
    folder that the re-run's workers then train into."""
    import os
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _runner_in_worker(out: str, prof: Profile, root: str, options: dict) -> RowRunner:
    import sys

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    data = Data(Path(out) / "data", prof, Path(root), log, load_clips(out))  # the run's --clips, from its folder
    return RowRunner(Path(out), prof, data, log, options)


def _local_in_worker(out: str, prof: Profile, root: str, task: tuple[Row, int], options: dict) -> None:
    _runner_in_worker(out, prof, root, options).local(*task)


def _row_in_worker(out: str, prof: Profile, root: str, task: tuple[Row, int], options: dict) -> None:
    runner = _runner_in_worker(out, prof, root, options)
    _run_tasks(runner, [task], runner.log)


def _dispatch(tasks: Sequence[tuple[Any, Any, float]], jobs: int, submit: Callable[[Any], Any]) -> None:
    """List scheduling of ``tasks`` = (key, the key of the task it needs finished first or None, cost) on at most
    ``jobs`` at once; ``submit(key)`` starts one and returns its Future. Whenever a slot frees, the next ready task
    starts: tasks that others need first, then the heaviest (ties: the given order). A failed task re-raises here
    once the tasks already running have ended; nothing more is started."""
    from concurrent.futures import FIRST_COMPLETED, wait

    needed = {need for _, need, _ in tasks if need is not None}
    waiting, running, done = list(tasks), {}, set()
    while waiting or running:
        ready = sorted((t for t in waiting if t[1] is None or t[1] in done), key=lambda t: (t[0] not in needed, -t[2]))
        for task in ready[:max(0, jobs - len(running))]:
            waiting.remove(task)
            running[submit(task[0])] = task[0]
        if not running:
            raise ReproduceError(f"tasks wait for tasks that are not there: {[t[0] for t in waiting]}")
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            key = running.pop(future)
            try:
                future.result()
            except BaseException:
                wait(running)  # let the other workers end their rows (each writes its record atomically)
                raise
            done.add(key)


def _run_parallel(out: Path, prof: Profile, root: Path, tasks: list[tuple[Row, int]], jobs: int,
                  log: Callable[[str], None], options: dict) -> None:
    """(row, seed) pairs over ``jobs`` worker processes (one CPU thread each). Networks that several rows share (an
    STMoE's local stage, MIM w/ D^all's pre-training) are trained first, once, each as a task of its own; every row
    is then a task of its own, so rows that share a local stage train side by side (``_dispatch``)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    rows = {(row.key, seed): (row, seed) for row, seed in tasks}
    shared = {RowRunner.affinity(row, seed): (row, seed) for row, seed in tasks if RowRunner.has_local(row)}
    plan = [(aff, None, 0.0) for aff in shared]
    plan += [(key, RowRunner.affinity(row, seed) if RowRunner.has_local(row) else None, _cost(row))
             for key, (row, seed) in rows.items()]
    workers = min(jobs, len(rows))
    log(f"{len(rows)} rows on {workers} worker processes")
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        def submit(key):
            if key in shared:
                return pool.submit(_local_in_worker, str(out), prof, str(root), shared[key], options)
            return pool.submit(_row_in_worker, str(out), prof, str(root), rows[key], options)

        _dispatch(plan, workers, submit)


def machine() -> str:
    """CPU model (with family/model numbers), cores, GPU, torch's CPU kernel set and the versions that decide the
    floats: numbers are reproducible to the last digit on the same machine and versions (tests/test_selection.py),
    not across CPU models (other kernels, other rounding)."""
    import numba
    import numpy
    import torch

    cpu = platform.processor() or platform.machine()
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = info.get("model name", cpu)
    if "cpu family" in info:
        # A VM's model name often hides the generation ("AMD EPYC" is Zen 2, 3 or 4); family/model do not, and torch's
        # kernel set (AVX2 vs AVX512) is what changes the rounding.
        cpu += f" (family {info['cpu family']} model {info.get('model', '?')})"
    kernels = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    gpu = f"GPU {_cuda()}" if _cuda() else "no GPU"
    return (f"{cpu}, {_cores()} cores, {gpu}; {platform.system()} {platform.machine()}, torch {torch.__version__} "
            f"({kernels} kernels), numba {numba.__version__}, numpy {numpy.__version__}")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cuda() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
