"""One training loop for every stage (paper §3.2): the stage decides the model, the data and which parameters train.

Per step: clips -> floats on the device -> roll-out with scheduled sampling (teacher_mask) under bf16 autocast on GPU
-> loss of Eq. 7-8 (stmoe.losses.compute_loss, per-term alpha, c, lambda) -> a collective finite check -> backward ->
gradient clipping -> Adam -> per-step schedule. Per epoch: validation loss, metrics lines (JSON lines / CSV /
TensorBoard), checkpoint (last and best on validation), plateau schedule, early stopping.

Reproducibility: everything random is a function of (run.seed, epoch, rank): the sampler order, random crops,
scheduled-sampling masks and the DataLoader worker seeds; checkpoints also carry the Python / NumPy / torch RNG
states. A run resumed from the checkpoint of epoch e therefore repeats, on CPU, the losses of epochs e+1, ... of an
uninterrupted run exactly.
"""
from __future__ import annotations

import csv
import io
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from physvid.files import atomic_write_text
from torch import nn

from ..losses import compute_loss
from ..metrics import frame_mse
from .checkpoint import (check_resume_inputs, load_checkpoint, model_meta, rng_state, save_checkpoint,
                         set_rng_state)
from .config import TrainConfig, dump_yaml
from .data import ClipDataset, make_loader, split_clip, to_unit
from .distributed import DistInfo, all_reduce_max, all_reduce_sum, barrier, init_distributed, wrap_ddp
from .errors import NonFiniteLossError, TrainConfigError, TrainError

Callback = Callable[[str, "Trainer", dict], None]

LAST = "last.pt"
BEST = "best.pt"


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, epoch, rank, purpose), stable across runs and platforms."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    """What a finished run left behind."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    epochs: int  # epochs completed
    best_epoch: int
    best_loss: float  # validation loss of the best epoch (training loss when there is no validation split)
    stopped: str  # "completed" or "early stopping"
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "best_checkpoint": str(self.best_checkpoint),
                "last_checkpoint": str(self.last_checkpoint), "epochs": self.epochs, "best_epoch": self.best_epoch,
                "best_loss": self.best_loss, "stopped": self.stopped}


class _EvalSampler(torch.utils.data.Sampler):
    """Rank r evaluates clips r, r + world, ... (no padding, so the all-reduced means are exact)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.idx = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.idx)

    def __len__(self) -> int:
        return len(self.idx)


class Trainer:
    """Train ``model`` on ``train_set`` (validating on ``val_set``) into ``run_dir``.

    Only parameters with ``requires_grad`` go to the optimiser; ``frozen`` modules are also kept in eval mode, so
    a frozen part (stage 2's decoder H, stage 3's experts and H) never changes. ``meta`` is stored in every checkpoint
    (the stage, the expert index, the checkpoints this run started from).
    """

    def __init__(self, model: nn.Module, config: TrainConfig, run_dir: str | Path, *, train_set: ClipDataset,
                 val_set: ClipDataset | None = None, stage: str = "train", frozen: Sequence[nn.Module] = (),
                 meta: dict | None = None, dist_info: DistInfo | None = None,
                 callbacks: Iterable[Callback] = ()) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.stage = stage
        self.frozen = list(frozen)
        self.meta = dict(meta or {})
        self.callbacks = list(callbacks)
        self.dist = dist_info if dist_info is not None else init_distributed(config.run.device)
        self.device = self.dist.device
        self.raw_model = model.to(self.device)
        self.train_set = train_set
        self.val_set = val_set if val_set is not None and len(val_set) > 0 else None
        if len(train_set) == 0:
            raise TrainConfigError(f"the training split of {', '.join(train_set.names)} is empty; check data.split / "
                                   f"data.train_range")
        run = config.run
        self.use_bf16 = run.precision == "bf16" or (run.precision == "auto" and self.device.type == "cuda")
        self.params = [p for p in self.raw_model.parameters() if p.requires_grad]
        if not self.params:
            raise TrainError(f"stage {stage}: no trainable parameters (everything is frozen)")
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.best_loss = math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.history: list[dict] = []
        self._tb = None
        self._bar = None
        self._saved_at = time.monotonic()  # when last.pt was last written (run.checkpoint_minutes)

    # ------------------------------------------------------------------ setup
    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def _loaders(self):
        d, run = self.config.data, self.config.run
        pin = self.device.type == "cuda"
        train = make_loader(self.train_set, d.batch_size, shuffle=True, seed=run.seed, rank=self.dist.rank,
                            world_size=self.dist.world_size, num_workers=d.num_workers, pin_memory=pin,
                            drop_last=run.compile)
        val = None
        if self.val_set is not None:
            val = torch.utils.data.DataLoader(
                self.val_set, batch_size=d.eval_batch_size or d.batch_size, num_workers=d.num_workers,
                sampler=_EvalSampler(len(self.val_set), self.dist.rank, self.dist.world_size), pin_memory=pin)
        return train, val

    def _steps_per_epoch(self, loader) -> int:
        n = len(loader)
        cap = self.config.optim.max_steps_per_epoch
        return min(n, cap) if cap else n

    def _optimizer(self) -> torch.optim.Optimizer:
        o = self.config.optim
        fused = o.fused == "on" or (o.fused == "auto" and self.device.type == "cuda")
        return torch.optim.Adam(self.params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay,
                                fused=True if fused else None)

    def _scheduler(self, optimizer, total_steps: int):
        o = self.config.optim
        if o.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps), eta_min=o.min_lr)
        if o.schedule == "onecycle":
            return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=o.lr, total_steps=max(2, total_steps),
                                                       pct_start=o.onecycle_pct_start)
        if o.schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=o.plateau_factor,
                                                              patience=o.plateau_patience, min_lr=o.min_lr)
        return None

    def teacher_forcing(self, step: int, total_steps: int) -> float:
        """Scheduled sampling: the chance of feeding ground truth at global step ``step`` (linear decay)."""
        o = self.config.optim
        span = o.teacher_forcing_fraction * total_steps
        frac = 1.0 if span <= 0 else min(1.0, step / span)
        return o.teacher_forcing_start + (o.teacher_forcing_end - o.teacher_forcing_start) * frac

    # ------------------------------------------------------------------ logging
    def _show_progress(self) -> bool:
        p = self.config.run.progress
        return self.is_main and (p == "on" or (p == "auto" and sys.stderr.isatty()))

    def _open_tensorboard(self):
        mode = self.config.run.tensorboard
        if mode == "off" or not self.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if mode == "on":
                raise TrainConfigError("run.tensorboard is 'on' but the tensorboard package is not installed "
                                       "(pip install tensorboard, or set run.tensorboard=auto)") from None
            return None
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=self.global_step or None)

    def _write_logs(self) -> None:
        """metrics.jsonl / metrics.csv from the whole history (rewritten, so a resumed run never duplicates lines)."""
        fmts = self.config.run.log_formats
        if "jsonl" in fmts:
            text = "".join(json.dumps(r) + "\n" for r in self.history)
            _write_log(self.run_dir / "metrics.jsonl", text)
        if "csv" in fmts and self.history:
            columns: list[str] = []
            for r in self.history:
                columns += [k for k in r if k not in columns]
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=columns)
            w.writeheader()
            for r in self.history:
                w.writerow(r)
            _write_log(self.run_dir / "metrics.csv", buf.getvalue())

    def _trim_steps_log(self) -> None:
        path = self.run_dir / "steps.jsonl"
        if not path.exists():
            return
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and
                _safe_json(ln).get("step", math.inf) <= self.global_step]
        _write_log(path, "".join(ln + "\n" for ln in keep))

    def _emit(self, event: str, info: dict) -> None:
        for cb in self.callbacks:
            cb(event, self, info)

    # ------------------------------------------------------------------ checkpoints
    def _payload(self, optimizer, scheduler) -> dict[str, Any]:
        return {
            "stage": self.stage, "meta": self.meta, "model": model_meta(self.raw_model),
            "model_state": {k: v.detach().cpu() for k, v in self.raw_model.state_dict().items()},
            "trainable": [n for n, p in self.raw_model.named_parameters() if p.requires_grad],
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
            "rng": rng_state(), "config": self.config.to_dict(), "epoch": self.epoch, "global_step": self.global_step,
            "best_loss": self.best_loss, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
            "history": self.history, "world_size": self.dist.world_size, "torch": str(torch.__version__),
        }

    def _resume(self, optimizer, scheduler) -> None:
        ckpt = load_checkpoint(self.ckpt_dir / LAST, map_location="cpu")
        saved = ckpt["model"]
        mine = model_meta(self.raw_model)
        if saved["name"] != mine["name"] or _jsonable(saved["config"]) != _jsonable(mine["config"]):
            raise TrainConfigError(f"cannot resume {self.run_dir}: it was trained with model {saved['name']!r} and a "
                                   f"different model config; use the same config or another --out")
        if ckpt.get("stage") != self.stage:
            raise TrainConfigError(f"cannot resume {self.run_dir}: it holds stage {ckpt.get('stage')!r}, not "
                                   f"{self.stage!r}")
        self.raw_model.load_state_dict(ckpt["model_state"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        self.epoch = int(ckpt["epoch"])
        self.global_step = int(ckpt["global_step"])
        self.best_loss = float(ckpt["best_loss"])
        self.best_epoch = int(ckpt["best_epoch"])
        self.bad_epochs = int(ckpt["bad_epochs"])
        self.history = list(ckpt["history"])

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> TrainResult:
        """Train for optim.epochs epochs (or until early stopping); ``resume`` continues from checkpoints/last.pt."""
        cfg = self.config
        last = self.ckpt_dir / LAST
        exists = last.exists()
        if exists and not resume:
            raise TrainConfigError(f"{self.run_dir} already holds a run ({last}); pass --resume to continue it or "
                                   f"choose another --out")
        if exists:  # a resumed run keeps its record of what it trained on: refuse other data than it started with
            check_resume_inputs(last, self.meta, self.run_dir)
        barrier(self.dist)
        threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True)
        try:
            return self._fit(resume, exists)
        finally:  # a library call must not change the caller's process settings
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)

    def _fit(self, resume: bool, exists: bool) -> TrainResult:
        cfg = self.config
        last = self.ckpt_dir / LAST
        seed_everything(cfg.run.seed + self.dist.rank)
        train_loader, val_loader = self._loaders()
        steps = self._steps_per_epoch(train_loader)
        total_steps = steps * cfg.optim.epochs
        optimizer = self._optimizer()
        scheduler = self._scheduler(optimizer, total_steps)
        if exists:
            self._resume(optimizer, scheduler)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not exists:  # leftovers of a run that died before its first checkpoint
                for name in ("steps.jsonl", "metrics.jsonl", "metrics.csv", "result.json"):
                    (self.run_dir / name).unlink(missing_ok=True)
            _write_log(self.run_dir / "config.yaml", dump_yaml({"stage": self.stage, "meta": self.meta,
                                                                  **cfg.to_dict()}))
            if exists:
                self._write_logs()
                self._trim_steps_log()
        if self._needs_gate_target():
            for ds in (self.train_set, self.val_set):
                if ds is not None and (len(ds) == 0 or ds.property_map(0) is None):
                    raise TrainConfigError(f"stage {self.stage}: loss.gate_target_weight > 0 needs physvid data made "
                                           f"with --property-maps; {', '.join(ds.names)} has none")
                if ds is not None:
                    ds.with_property_map = True
        model = wrap_ddp(self.raw_model, self.dist, cfg.run.find_unused_parameters)
        recompile_error = None
        if cfg.run.compile:
            import torch._dynamo

            # One graph per stage: graphs of earlier stages (other frozen parts, other shapes) must not count against
            # this one's recompile limit, and a recompilation -- Dynamo would fall back to eager after 8 of them,
            # with one warning, while the config says compile -- is an error here, not a silent slow-down. The
            # loop keeps every input of the roll-out fixed: full batches only (drop_last), and targets plus a
            # teacher-forcing mask (all False once scheduled sampling ends) in every step.
            torch._dynamo.reset()
            recompile_error = torch._dynamo.config.error_on_recompile
            torch._dynamo.config.error_on_recompile = True
            model = torch.compile(model, mode=None if cfg.run.compile_mode == "default" else cfg.run.compile_mode,
                                  backend=cfg.run.compile_backend)
        self._tb = self._open_tensorboard()
        try:
            while self.epoch < cfg.optim.epochs and not self._patience_spent():
                record = self._train_epoch(model, train_loader, optimizer, scheduler, steps, total_steps)
                record.update(self._validate(val_loader))
                self._end_epoch(record, optimizer, scheduler)
        except Exception as exc:
            if recompile_error is not None and type(exc).__name__ == "RecompileError":
                raise TrainError(f"stage {self.stage}: torch.compile had to recompile the model ({exc}); "
                                 f"run without --compile, or report it with the config") from None
            raise
        finally:
            if recompile_error is not None:
                torch._dynamo.config.error_on_recompile = recompile_error
            if self._bar is not None:
                self._bar.close()
            if self._tb is not None:
                self._tb.close()
        stopped = "early stopping" if self._patience_spent() else "completed"
        result = TrainResult(run_dir=self.run_dir, best_checkpoint=self.ckpt_dir / BEST, last_checkpoint=last,
                             epochs=self.epoch, best_epoch=self.best_epoch, best_loss=self.best_loss, stopped=stopped,
                             history=self.history)
        if self.is_main:
            atomic_write_text(self.run_dir / "result.json", json.dumps({"stage": self.stage, "meta": self.meta,
                                                                   **result.to_dict()}, indent=2) + "\n")
        barrier(self.dist)
        return result

    def _patience_spent(self) -> bool:
        patience = self.config.optim.early_stopping
        return bool(patience) and self.bad_epochs >= patience

    def _train_epoch(self, model, loader, optimizer, scheduler, steps: int, total_steps: int) -> dict:
        cfg = self.config
        epoch = self.epoch + 1
        l, n = cfg.data.input_frames, cfg.data.output_frames
        loader.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        loader.generator.manual_seed(derive_seed(cfg.run.seed, epoch, 1))
        # Masks are drawn on the device (no host-to-device copy per step); on the CPU the stream is the same as before.
        gen = torch.Generator(device=self.device).manual_seed(derive_seed(cfg.run.seed, epoch, self.dist.rank, 2))
        self.raw_model.train()
        for m in self.frozen:
            m.eval()
        bar = None
        if self._show_progress():
            from tqdm import tqdm

            bar = tqdm(total=steps, desc=f"{self.stage} {epoch}/{cfg.optim.epochs}", file=sys.stderr, unit="batch",
                       dynamic_ncols=True, leave=True)
        # Loss terms are summed on the device and read back every run.log_every steps and at the epoch end (as
        # nanoGPT does): a float() per term and step would stall a GPU on ~6 host syncs per step.
        sums: dict[str, torch.Tensor] = {}
        first_bad = torch.zeros((), dtype=torch.int64, device=self.device)  # 1 + index of the first non-finite batch
        count, tf_sum = 0, 0.0
        observed = self._observed_loss()
        needs_expert_frames = self._needs_expert_frames()
        aux_defaults = self._aux_defaults()
        start = time.perf_counter()
        steps_log = (self.run_dir / "steps.jsonl").open("a") if self.is_main else None
        loss = None
        try:
            for i, batch in enumerate(loader):
                if i >= steps:
                    break
                clip, gate_target = self._gate_target(batch)
                x = to_unit(clip.to(self.device, non_blocking=True))
                inputs, targets = split_clip(x, l)
                B = inputs.shape[0]
                p_tf = self.teacher_forcing(self.global_step, total_steps)
                mask = None
                if n > 1 and (p_tf > 0 or cfg.run.compile):  # compiled: always a mask, so the graph never changes
                    mask = torch.rand((B, n - 1), generator=gen, device=self.device) < p_tf
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
                    out = model(inputs, n, targets=targets if mask is not None else None, teacher_mask=mask,
                                predict_observed=observed, return_expert_frames=needs_expert_frames)
                loss, terms = self._objective(out, inputs, targets, observed, needs_expert_frames, aux_defaults,
                                              gate_target)
                first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss.detach()),
                                        torch.full_like(first_bad, i + 1), first_bad)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip)
                optimizer.step()
                lr = optimizer.param_groups[0]["lr"]
                if scheduler is not None and cfg.optim.schedule in ("cosine", "onecycle"):
                    scheduler.step()
                self.global_step += 1
                count += B
                tf_sum += p_tf
                for k, v in terms.items():
                    v = v.detach().to(self._acc_dtype) * B
                    sums[k] = sums[k] + v if k in sums else v
                synced = self.global_step % cfg.run.log_every == 0
                if synced:
                    self._check_finite(first_bad, terms, epoch)
                    value = float(loss.detach())
                    if steps_log is not None:
                        steps_log.write(json.dumps({"epoch": epoch, "step": self.global_step, "loss": value,
                                                    "lr": lr, "teacher_forcing": p_tf}) + "\n")
                        steps_log.flush()
                    if self._tb is not None:
                        self._tb.add_scalar(f"{self.stage}/step_loss", value, self.global_step)
                    if bar is not None:
                        rate = count * self.dist.world_size / max(1e-9, time.perf_counter() - start)
                        bar.set_postfix(loss=f"{value:.4g}", samples_s=f"{rate:.1f}", refresh=False)
                if bar is not None:
                    bar.update(1)
                if self.callbacks:  # a float() here is a sync; only pay it when someone listens
                    self._emit("step_end", {"epoch": epoch, "step": self.global_step, "loss": float(loss.detach())})
            if loss is not None:
                self._check_finite(first_bad, terms, epoch)
        finally:
            if steps_log is not None:
                steps_log.close()
        self._bar = bar  # closed by _end_epoch, after the validation loss joins its postfix
        seconds = time.perf_counter() - start
        keys = sorted(sums)
        packed = torch.stack([torch.tensor(float(count), dtype=self._acc_dtype, device=self.device)]
                             + [sums[k] for k in keys]) if keys else \
            torch.tensor([float(count)], dtype=self._acc_dtype, device=self.device)
        packed = all_reduce_sum(packed, self.dist).cpu()
        total = max(1.0, float(packed[0]))
        record: dict[str, Any] = {"epoch": epoch, "step": self.global_step,
                                  "lr": optimizer.param_groups[0]["lr"],
                                  "teacher_forcing": tf_sum / max(1, min(steps, len(loader))),
                                  "train_loss": float(packed[1 + keys.index("total")]) / total}
        record.update({f"train_{k}": float(packed[1 + j]) / total for j, k in enumerate(keys) if k != "total"})
        record.update({"samples": int(packed[0]), "seconds": round(seconds, 3),
                       "samples_per_s": round(float(packed[0]) / max(seconds, 1e-9), 2),
                       "world_size": self.dist.world_size})
        return record

    def _objective(self, out, inputs: torch.Tensor, targets: torch.Tensor, observed: bool, needs_expert_frames: bool,
                   aux_defaults: dict, gate_target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """The training objective (stmoe.losses.compute_loss: Eq. 7-8, the model's aux terms at the model's own
        weights, the observed frames' predictions when scored) of one roll-out ``out``. Training and validation both call this, so
        that ``val_loss`` is the objective the optimiser minimises, measured on held-out clips."""
        pred, target = out.pred.float(), targets
        if observed and out.observed_pred is not None:  # every next-frame prediction: l - 1 + n targets
            pred = torch.cat([out.observed_pred.float(), pred], 1)
            target = torch.cat([inputs[:, 1:], targets], 1)
        return compute_loss(pred, target, out.weights.float() if out.weights is not None else None,
                            {k: v.float() for k, v in out.aux.items()}, self.config.loss, aux_defaults,
                            out.expert_frames.float() if needs_expert_frames else None, gate_target)

    @property
    def _acc_dtype(self) -> torch.dtype:
        """Accumulators of per-epoch sums: float64, except on MPS, which has none."""
        return torch.float32 if self.device.type == "mps" else torch.float64

    def _needs_gate_target(self) -> bool:
        return self.config.loss.gate_target_weight > 0 and getattr(self.raw_model, "gate", None) is not None

    def _gate_target(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(clip, gate target) of a batch: the expert index of each cell of the n predicted frames (physvid property
        codes 1, 2, 3 = translation, rotation, intensity -> experts 0, 1, 2, as stmoe.alignment), -1 on background."""
        if not isinstance(batch, (list, tuple)):
            return batch, None
        from ..alignment import pool_roles

        clip, pmap = batch
        l, n = self.config.data.input_frames, self.config.data.output_frames
        roles = pool_roles(pmap[:, l:l + n].to(self.device, non_blocking=True), self.raw_model.config.patch_size)
        return clip, roles - 1

    def _aux_defaults(self) -> dict:
        """The model's own weight of each auxiliary loss term (e.g. ADDL's magnitude 0, PhyDNet's moment 1/18)."""
        return dict(getattr(self.raw_model, "default_aux_weights", {}))

    def _observed_loss(self) -> bool:
        """optim.observed_loss: on, off, or auto (the model's own default: recurrent baselines score l - 1 + n frames)."""
        mode = self.config.optim.observed_loss
        if mode == "auto":
            return bool(getattr(self.raw_model, "observed_loss_default", False))
        return mode == "on"

    def _needs_expert_frames(self) -> bool:
        """Whether the loss needs each expert's frames: the competition term of a gated mixture (loss.competition_weight)."""
        return self.config.loss.competition_weight > 0 and getattr(self.raw_model, "gate", None) is not None

    def _check_finite(self, first_bad: torch.Tensor, terms: dict, epoch: int) -> None:
        """Raise NonFiniteLossError when any rank has seen a non-finite loss since the epoch began (one sync)."""
        bad = all_reduce_max(first_bad.reshape(1), self.dist)
        i = int(bad.item())
        if i == 0:
            return
        nonfinite = [k for k, v in terms.items() if not torch.isfinite(v.detach()).all()]
        kept = self.ckpt_dir / LAST
        # Name a file only when it is there to be named (a run that fails in its first epoch has none): the advice
        # then differs too, since --resume needs a checkpoint to continue from.
        if kept.is_file():
            where, then = (f"the last good checkpoint {kept} is kept",
                           "then continue from it with --resume")
        else:
            where, then = "no checkpoint was written yet", "then start the run again (without --resume)"
        raise NonFiniteLossError(
            f"stage {self.stage}: the loss became nan or inf at epoch {epoch}, batch {i} "
            f"(non-finite terms: {', '.join(nonfinite) or 'total'}); training stopped and {where}; lower optim.lr, "
            f"set optim.grad_clip or check the data, {then}")

    @torch.no_grad()
    def _validate(self, loader) -> dict:
        if loader is None:
            return {}
        cfg = self.config
        l, n = cfg.data.input_frames, cfg.data.output_frames
        model = self.raw_model
        model.eval()
        needs_expert_frames = self._needs_expert_frames()
        observed = self._observed_loss()
        aux_defaults = self._aux_defaults()
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for batch in loader:
            clip, gate_target = self._gate_target(batch)
            x = to_unit(clip.to(self.device, non_blocking=True))
            inputs, targets = split_clip(x, l)
            B = inputs.shape[0]
            # The training objective without teacher forcing (the model predicts from its own frames, as at test
            # time); the warm-up predictions are scored when training scores them (their inputs are observed frames
            # either way, so they do not change out.pred).
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
                out = model(inputs, n, predict_observed=observed, return_expert_frames=needs_expert_frames)
            _, terms = self._objective(out, inputs, targets, observed, needs_expert_frames, aux_defaults, gate_target)
            pred = out.pred.float().clamp(0, 1)
            # The Moving-MNIST convention of the paper's tables: per-frame sum over C, H, W (docs/METRICS.md).
            terms["mse"] = frame_mse(pred, targets).mean()
            terms["mse_pixel"] = ((pred - targets) ** 2).mean()
            # Summed on the device and read back once per validation, not once per term and batch.
            for k, v in terms.items():
                v = v.detach().to(self._acc_dtype) * B
                sums[k] = sums[k] + v if k in sums else v
            count += B
        keys = sorted(sums)
        packed = torch.stack([torch.tensor(float(count), dtype=self._acc_dtype, device=self.device)]
                             + [sums[k] for k in keys])
        packed = all_reduce_sum(packed, self.dist).cpu()
        total = max(1.0, float(packed[0]))
        out = {"val_loss": float(packed[1 + keys.index("total")]) / total} if keys else {}
        out.update({f"val_{k}": float(packed[1 + j]) / total for j, k in enumerate(keys) if k != "total"})
        return out

    def _end_epoch(self, record: dict, optimizer, scheduler) -> None:
        cfg = self.config
        bar, self._bar = self._bar, None
        if bar is not None:
            extra = {"loss": f"{record['train_loss']:.4g}", "samples_s": f"{record['samples_per_s']:.1f}"}
            if "val_loss" in record:
                extra["val_loss"] = f"{record['val_loss']:.4g}"
            bar.set_postfix(extra)
            bar.close()
        self.epoch = record["epoch"]
        key = {"loss": "val_loss", "mse": "val_mse"}[cfg.optim.monitor]
        key = key if key in record else "train_loss"
        monitor = record[key]
        record["monitor"] = key
        improved = monitor < self.best_loss - cfg.optim.min_delta or self.best_epoch == 0
        if improved:
            self.best_loss, self.best_epoch, self.bad_epochs = float(monitor), self.epoch, 0
        else:
            self.bad_epochs += 1
        record["best_epoch"] = self.best_epoch
        if scheduler is not None and cfg.optim.schedule == "plateau":
            scheduler.step(monitor)
        self.history.append(record)
        final = self.epoch >= cfg.optim.epochs or self._patience_spent()
        if self.is_main:
            payload = None
            if cfg.run.checkpoint_minutes > 0:
                due = time.monotonic() - self._saved_at >= 60.0 * cfg.run.checkpoint_minutes
            else:
                due = self.epoch % cfg.run.checkpoint_every == 0
            if improved or final or due:
                self._saved_at = time.monotonic()
                payload = self._payload(optimizer, scheduler)
                save_checkpoint(self.ckpt_dir / LAST, payload)
            if improved:
                save_checkpoint(self.ckpt_dir / BEST, payload)
            self._write_logs()
            if self._tb is not None:
                for k, v in record.items():
                    if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                        self._tb.add_scalar(f"{self.stage}/{k}", v, self.epoch)
                self._tb.flush()
        barrier(self.dist)
        self._emit("epoch_end", record)


def _write_log(path: Path, text: str) -> None:
    """Logs rewritten every epoch: whole or not at all, but not fsynced (a power cut costs at most the last epoch's
    lines, which the checkpoint's resume rewrites anyway)."""
    atomic_write_text(path, text, durable=False)


def _safe_json(line: str) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return {}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
