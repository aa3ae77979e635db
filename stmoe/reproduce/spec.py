"""What `stmoe reproduce` runs: profiles (scale), the rows of each experiment of paper §4, and the paper's numbers.

A *row* is one trained model of a table: a baseline trained on the real data, MIM pre-trained on D^all then trained on
the real data, or an STMoE trained by the two-step optimisation of §3.2 (local: F^0/H and the experts on D^k; global:
gating, then the whole network, on the real data) or end-to-end on the real data only (Table 5).

Budget (the same for every row of a table): ``real_steps`` optimiser steps on the real training set, batch
``batch_size``; an STMoE spends half of them in the gating stage and half in the global stage. The methods that use
synthetic data spend ``syn_steps`` on it per trained network: each expert F^k (and F^0 for STMoE-conv) in the local
stage, and MIM w/ D^all's pre-training on D^all (§4.1: "to eliminate differences in the number of training data").
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

PROFILES_HELP = {
    "smoke": "seconds: structure, resume and tables for tests; not for conclusions",
    "cpu": "2 CPU cores: 32x32, 2 x 32 hidden, 3x3 filters; table1 within 45 minutes",
    "gpu": "one GPU: 64x64, patch 4, 4 x 64 hidden, 5x5 filters (the common Moving-MNIST setting)",
    "paper": "the paper's setting: 128x128, patch 4, 4 x 128 hidden, 5x5 filters",
}


@dataclass(frozen=True)
class Profile:
    """The scale of a reproduction: frame and model sizes, data counts and budgets."""

    name: str
    size: int  # frame height = width, pixels
    patch_size: int
    num_layers: int
    num_hidden: int
    filter_size: int
    gate_channels: int
    n_train: int  # real (Dynamic MNIST) training sequences; the paper: 250
    n_val: int  # validation sequences (best-checkpoint selection), same digits as training
    n_test: int  # test sequences, a separate dataset drawn from digits the training set never shows
    n_syn: int  # sequences per synthetic D^k
    real_steps: int  # optimiser steps on the real data, every row
    syn_steps: int  # optimiser steps on synthetic data, per network trained on it
    batch_size: int = 16
    lr: float = 1e-3
    threads: int | None = 1  # CPU threads per run: 1 avoids OpenMP oversubscription on small convolutions
    phy_channels: int = 32
    phy_kernel: int = 5
    datasizes: tuple[int, ...] = (25, 50, 100, 250)  # Fig. 10
    object_size: tuple[float, float] = (0.25, 0.45)  # digit/shape size as a fraction of the frame side
    speed: tuple[float, float] = (0.015, 0.045)  # pixels per frame as a fraction of the frame side
    real_clip_stride: int = 4  # frames between clips cut from a real video
    real_sets: tuple[str, ...] | None = None  # the real datasets of `real` (None: all of REAL_DATA)
    jobs: int = 1  # worker processes training independent rows side by side (cpu: one per core)
    # The recipe search (the same for every row): each row trains `search` candidate recipes (recipes()) on the
    # real training split with the row's whole real-data budget each, and keeps the one with the lowest validation
    # MSE. Seed 0 searches; seeds 1.. train the recipe seed 0 chose.
    search: int = 4
    lrs: tuple[float, ...] = (3e-3, 1e-3, 1e-2, 3e-4)  # learning rates of the single-network rows, in search order

    @property
    def model_fields(self) -> dict[str, Any]:
        return {"height": self.size, "width": self.size, "patch_size": self.patch_size,
                "num_layers": self.num_layers, "num_hidden": self.num_hidden, "filter_size": self.filter_size}


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", size=16, patch_size=4, num_layers=2, num_hidden=4, filter_size=3, gate_channels=4,
                     n_train=8, n_val=4, n_test=4, n_syn=8, real_steps=2, syn_steps=2, batch_size=4,
                     phy_channels=4, phy_kernel=3, datasizes=(4, 8), real_sets=("traffic", "radar"), search=2),
    "cpu": Profile("cpu", size=32, patch_size=4, num_layers=2, num_hidden=32, filter_size=3, gate_channels=16,
                   n_train=250, n_val=50, n_test=200, n_syn=2000, real_steps=400, syn_steps=400, lr=3e-3,
                   phy_kernel=5, jobs=2),
    "gpu": Profile("gpu", size=64, patch_size=4, num_layers=4, num_hidden=64, filter_size=5, gate_channels=16,
                   n_train=250, n_val=50, n_test=500, n_syn=10000, real_steps=2000, syn_steps=5000, lr=1e-3,
                   threads=None, phy_channels=64, phy_kernel=7),
    "paper": Profile("paper", size=128, patch_size=4, num_layers=4, num_hidden=128, filter_size=5, gate_channels=16,
                     n_train=250, n_val=50, n_test=500, n_syn=10000, real_steps=4000, syn_steps=10000, lr=1e-3,
                     threads=None, phy_channels=64, phy_kernel=7),
}


@dataclass(frozen=True)
class Row:
    """One trained model of a table.

    kind: "baseline" (``model`` on the real data), "pretrained" (``model`` on D^all, then the real data),
    "stmoe" (two-step optimisation) or "end_to_end" (the STMoE architecture on the real data only).
    """

    label: str  # as in the paper's table
    kind: str
    model: str  # registered model name
    attention: str = "pixel"
    noise: float = 0.26  # noise ratio of the synthetic D^k
    n_train: int | None = None  # real training sequences (None: the profile's)
    real: str = "dynamic-mnist"  # the real dataset (a key of REAL_DATA, or dynamic-mnist)
    paper: dict[str, float] = field(default_factory=dict)  # the paper's numbers for this row

    @property
    def key(self) -> str:
        """Folder name of the row's runs: equal keys are the same training, shared between experiments."""
        parts = [self.kind, self.model, self.real]
        if self.kind in ("stmoe", "end_to_end") and self.attention != "pixel":
            parts.append(self.attention)
        if self.kind in ("stmoe", "pretrained"):
            parts.append(f"noise{self.noise:g}")
        if self.n_train is not None:
            parts.append(f"n{self.n_train}")
        return "-".join(parts)

    def replace(self, **changes: Any) -> "Row":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Recipe:
    """One candidate way to train a row on the real data; the row keeps the candidate with the lowest validation MSE.

    lr: the learning rate of every real-data stage (baseline, MIM w/ D^all's fine-tuning, end-to-end, the STMoE's
    gating stage). global_lr: the STMoE's global stage (None: lr). competition: weight of the experts' competition in
    the gating stage (stmoe.losses.competition_map; beyond the paper). gate_target: the gating stage trains on physvid
    `mixed` clips with each cell's known physics as the gate's target (loss.gate_target_weight; beyond the paper --
    only a generator that knows the physics of every pixel can offer it), then the global stage on the real data.
    """

    name: str
    lr: float
    global_lr: float | None = None
    competition: float = 0.0
    gate_target: bool = False

    def describe(self) -> str:
        parts = [f"lr {self.lr:g}"]
        if self.global_lr is not None:
            parts.append(f"global lr {self.global_lr:g}")
        if self.competition:
            parts.append(f"competition {self.competition:g}")
        if self.gate_target:
            parts.append("gate pre-trained on physvid property maps")
        return ", ".join(parts)


# --------------------------------------------------------------------------------------------------- data recipes
MNIST = "mnist/t10k-images-idx3-ubyte.gz"  # below the data root (../shared/data)
TRAIN_DIGITS, TEST_DIGITS = (0, 9000), (9000, 10000)  # the MNIST test file's images; disjoint train/test digits
CLIP = (4, 6)  # l observed, n predicted frames (§4.1)
# The global objective of every row trained on real data: the paper's Eq. 8 set-up (REFERENCE-NOTES), with the
# entropy weight scaled to our per-pixel reconstruction term (docs/training.md: 0.01 collapses the gate).
REAL_LOSS = {"recon_alpha": 0.0, "recon_c": 0.9, "entropy_alpha": 0.0, "entropy_c": 0.3, "entropy_weight": 1e-4,
             "smooth_alpha": 0.0, "smooth_c": 0.75, "smooth_weight": 0.01}
LOCAL_LOSS = {"recon_alpha": 2.0, "recon_c": 1.0}  # "the usual loss function of DL experts" (§3.2): 1/2 MSE
# physvid seeds of the generated sets (fixed: every reproduction renders the same videos)
SYNTHETIC_SEEDS = {"translation": 100, "rotation": 101, "intensity": 102}
MIXED_SEED = 110
DYNAMIC_MNIST_SEEDS = {"train": 7, "test": 8}
# Acceleration and jerk magnitudes per frame^2 and frame^3, as fractions of the frame side (speed: Profile.speed)
ACCELERATION, JERK = 0.004, 0.0006


def motion_config(profile: "Profile", frames: int) -> dict:
    """The physvid render settings every generated set of a reproduction shares: frame size, object sizes and the
    motion ranges, all scaled to the profile's frame side."""
    s = profile.size
    lo, hi = profile.object_size
    return {"height": s, "width": s, "frames": frames,
            "shape": {"size": [lo * s, hi * s], "thickness": [max(1.0, s / 32), max(1.5, s / 16)]},
            "motion": {"speed": [profile.speed[0] * s, profile.speed[1] * s],
                       "acceleration": [0.0, ACCELERATION * s], "jerk": [0.0, JERK * s]}}


def synthetic_config(profile: "Profile", prop: str, noise: float) -> dict:
    """D^prop (translation, rotation or intensity) at noise ratio ``noise`` (paper §3.2)."""
    return {"property": prop, "seed": SYNTHETIC_SEEDS[prop], **motion_config(profile, sum(CLIP)),
            "noise": {"ratio": noise}}


def mixed_config(profile: "Profile", noise: float) -> dict:
    """physvid `mixed` clips with property maps, for the physvid-gate recipe (Recipe.gate_target)."""
    return {"property": "mixed", "seed": MIXED_SEED, **motion_config(profile, sum(CLIP)), "noise": {"ratio": noise},
            "property_maps": True}


def dynamic_mnist_config(profile: "Profile", split: str, mnist: Any) -> dict:
    """Dynamic MNIST (§4.1): train digits 0:9000, test digits 9000:10000 (with property maps) of the file ``mnist``."""
    motion = motion_config(profile, sum(CLIP))
    digits = TRAIN_DIGITS if split == "train" else TEST_DIGITS
    return {"property": "dynamic-mnist", "seed": DYNAMIC_MNIST_SEEDS[split], **motion,
            "shape": {**motion["shape"], "digits": str(mnist), "digit_range": list(digits)},
            "property_maps": split == "test"}


def recipes(row: "Row", profile: "Profile") -> tuple[Recipe, ...]:
    """The ``profile.search`` candidates of ``row``, in search order (the first is the uniform recipe of earlier
    versions). An STMoE with a gate: the paper's recipe (one lr), the global stage at a tenth of it (at the full rate
    it undid the gate's routing, docs/results.md), the experts' competition, and the gate pre-trained on physvid
    property maps. Every other row: profile.lrs."""
    if row.kind == "stmoe" and row.attention != "none":
        lr = profile.lr
        out = (Recipe("paper", lr), Recipe("physvid-gate", lr, lr / 10, gate_target=True),
               Recipe("global-lr/10", lr, lr / 10), Recipe("competition", lr, lr / 10, competition=1.0))
    else:
        out = tuple(Recipe(f"lr{v:g}", v) for v in profile.lrs)
    return out[:profile.search]


def _p(mse: float | None = None, ssim: float | None = None, **more: float) -> dict[str, float]:
    out = {k: v for k, v in (("mse", mse), ("ssim", ssim)) if v is not None}
    out.update(more)
    return out


# Table 1 (Dynamic MNIST, 128x128, MSE per frame, SSIM), paper §4.1.
TABLE1 = (
    Row("U-Net", "baseline", "unet", paper=_p(336, 0.920)),
    Row("ADDL", "baseline", "addl", paper=_p(213, 0.964)),
    Row("PredRNN++", "baseline", "predrnnpp", paper=_p(205, 0.933)),
    Row("MIM", "baseline", "mim", paper=_p(200, 0.963)),
    Row("PhyDNet", "baseline", "phydnet", paper=_p(162, 0.928)),
    Row("ConvLSTM", "baseline", "convlstm"),  # not in the paper's Table 1
    Row("MIM w/ D^all", "pretrained", "mim", paper=_p(174, 0.964)),
    Row("STMoE-Id", "stmoe", "stmoe-id", paper=_p(115, 0.978)),
    Row("STMoE-conv", "stmoe", "stmoe-conv", paper=_p(120, 0.975)),
)
# Table 5 (paper: Pedestrian MSE 59.6 / 61.3, SSIM 0.877 / 0.873): the STMoE architecture, two optimisations.
TABLE5 = (
    Row("STMoE w/ local and global optimisation", "stmoe", "stmoe-id", paper=_p(59.6, 0.877)),
    Row("STMoE w/ end-to-end", "end_to_end", "stmoe-id", paper=_p(61.3, 0.873)),
)
# Table 6 (paper: Pedestrian, STMoE-Id): attention none / uniform / pixel-wise.
TABLE6 = (
    Row("No attention", "stmoe", "stmoe-id", attention="none", paper=_p(75.0, 0.864)),
    Row("Uniform attention", "stmoe", "stmoe-id", attention="uniform", paper=_p(70.2, 0.870)),
    Row("Pixel-wise attention", "stmoe", "stmoe-id", paper=_p(59.6, 0.877)),
)
# §4.5 noise ablation (paper: radar, STMoE-conv, B-MSE 1.05e3 / 1.02e3 / 1.00e3 for ratios 0 / 0.26 / 0.70).
NOISE = tuple(Row(f"noise ratio {r:g}", "stmoe", "stmoe-conv", noise=r, paper={"bmse": b})
              for r, b in ((0.0, 1050.0), (0.26, 1020.0), (0.70, 1000.0)))

# Real clips of ../shared/data for `real` (Tables 2-4 in spirit): name -> (path below the data root, prepare kind,
# frames between clips; None = the profile's real_clip_stride). The radar event has 48 frames: every clip start.
REAL_DATA = {
    "traffic": ("video/traffic-highway-video02.avi", "auto", None),
    "street": ("video/street-bikes.mp4", "auto", None),
    "boiling-water": ("texture/dyntex-55fa210-boiling-water.avi", "auto", None),
    "flag": ("texture/dyntex-571c110-flag.avi", "auto", None),
    "fire": ("texture/fire.mp4", "auto", None),
    "radar": ("radar/bom", "radar", 1),
}


def real_sources(clips: Any = None) -> dict[str, tuple]:
    """REAL_DATA with the user's clips (a stmoe.reproduce.clips.Clips) added: name -> (path, kind, stride)."""
    return {**REAL_DATA, **(dict(clips.entries) if clips is not None else {})}


# Named by the issue but unusable here, with the reason written into the table.
REAL_SKIPPED = {"fish": "texture/fish-frames holds 12 frames: 3 clips of 10, too few to train, validate and test"}
# The paper's numbers nearest in spirit (Table 2 Traffic 1 SSIM; Table 3 Bubble/Fire/Fish SSIM; Table 4 radar MSE,
# B-MSE/10): our clips are not the paper's, so they are context, not targets.
REAL_PAPER = {
    ("traffic", "unet"): _p(ssim=0.867), ("traffic", "addl"): _p(ssim=0.904), ("traffic", "predrnnpp"): _p(ssim=0.890),
    ("traffic", "mim"): _p(ssim=0.890), ("traffic", "phydnet"): _p(ssim=0.846), ("traffic", "stmoe-id"): _p(ssim=0.909),
    ("boiling-water", "unet"): _p(ssim=0.859), ("boiling-water", "addl"): _p(ssim=0.903),
    ("boiling-water", "mim"): _p(ssim=0.956), ("boiling-water", "stmoe-id"): _p(ssim=0.970),
    ("fire", "unet"): _p(ssim=0.414), ("fire", "addl"): _p(ssim=0.488), ("fire", "mim"): _p(ssim=0.432),
    ("fire", "stmoe-id"): _p(ssim=0.489),
    ("fish", "unet"): _p(ssim=0.701), ("fish", "addl"): _p(ssim=0.782), ("fish", "mim"): _p(ssim=0.858),
    ("fish", "stmoe-id"): _p(ssim=0.863),
    ("radar", "unet"): _p(53.0, bmse=1120.0), ("radar", "addl"): _p(58.3, bmse=1170.0),
    ("radar", "mim"): _p(57.9, bmse=1170.0), ("radar", "stmoe-conv"): _p(51.6, bmse=1030.0),
}
REAL_MODELS = (("U-Net", "baseline", "unet"), ("ADDL", "baseline", "addl"), ("MIM", "baseline", "mim"),
               ("STMoE-Id", "stmoe", "stmoe-id"))


def experiment_rows(name: str, profile: Profile, clips: Any = None) -> tuple[Row, ...]:
    """The rows of experiment ``name`` at ``profile``; ``clips`` (a stmoe.reproduce.clips.Clips) are the user's
    clips of the `clips` experiment."""
    if name == "table1":
        return TABLE1
    if name == "table5":
        return TABLE5
    if name == "table6":
        return TABLE6
    if name == "noise":
        return NOISE
    if name == "datasize":
        rows = []
        for n in profile.datasizes:
            # At the profile's own training size a row is table1's training (same data, seed and recipes): sharing its
            # key lets both tables use one run instead of training it twice.
            size = None if n == profile.n_train else n
            rows += [Row(f"STMoE-Id, {n} seq.", "stmoe", "stmoe-id", n_train=size),
                     Row(f"MIM, {n} seq.", "baseline", "mim", n_train=size),
                     Row(f"MIM w/ D^all, {n} seq.", "pretrained", "mim", n_train=size)]
        return tuple(rows)
    if name == "clips":  # the rows of `real` on the user's --clips (stmoe/reproduce/clips.py)
        from .clips import Clips, clip_rows
        return clip_rows(profile, clips or Clips())
    if name == "real":
        rows = []
        for real in profile.real_sets or tuple(REAL_DATA):  # real_sets may name clips: real_sources() has them
            models = REAL_MODELS if real != "radar" else REAL_MODELS[:3] + (("STMoE-conv", "stmoe", "stmoe-conv"),)
            rows += [Row(f"{label}", kind, model, real=real, paper=REAL_PAPER.get((real, model), {}))
                     for label, kind, model in models]
        return tuple(rows)
    raise KeyError(name)


EXPERIMENTS = {
    "table1": "Dynamic MNIST (§4.1, Table 1): five baselines, ConvLSTM, MIM w/ D^all, STMoE-Id, STMoE-conv",
    "table5": "local + global optimisation vs end-to-end on the real data only (Table 5)",
    "table6": "attention none / uniform / pixel-wise, STMoE-Id (Table 6)",
    "noise": "noise ratio 0 / 0.26 / 0.70 of the synthetic D^k, STMoE-conv, with gating/global curves (Fig. 8)",
    "datasize": "real training sequences vs SSIM for STMoE-Id, MIM and MIM w/ D^all (Fig. 10)",
    "real": "traffic, street, dynamic textures and a radar event of ../shared/data (Tables 2-4 in spirit)",
    "clips": "the rows of `real` on your own clips (--clips: videos, frame folders, arrays, prepared datasets)",
}
ALL = ("table1", "table5", "table6", "noise", "datasize", "real")
