"""Evaluation metrics of the paper's tables (§4: MSE, SSIM, B-MSE; Fig. 5b: MSE of optical flow) plus MAE and PSNR.

Every metric is computed per sequence and per predicted frame on frames in [0, 1], then averaged over sequences for each lead time
("per_frame") and over lead times ("mean"). Conventions (full formulas in docs/METRICS.md):

- "mse": per-frame SUM over C, H, W of squared error (Moving-MNIST literature; = "mse_pixel" * C*H*W).
- "mse_pixel": per-frame mean over C, H, W of squared error.
- "mae" / "mae_pixel": the same with absolute error (sum / mean).
- "ssim": skimage.metrics.structural_similarity per frame, data_range=1, channel_axis=0 when C > 1 (skimage defaults otherwise:
  7x7 uniform window). Channels are averaged by skimage.
- "psnr": 10 log10(1 / mse_pixel) per frame (skimage's formula with data_range=1), capped at `psnr_cap` dB (default 100) when the frames
  are identical, so that averages stay finite and JSON-valid. Averages are means of per-frame PSNR.
- "bmse" / "bmae": balanced MSE / MAE (Shi et al. 2017): per-frame SUM over C, H, W of w * (pred - gt)^2 (or w * |pred - gt|), with w
  a step function of the ground-truth rain rate R (default thresholds 2, 5, 10, 30 mm/h -> weights 1, 2, 5, 10, 30). R comes from the
  ground-truth pixel value by the HKO mapping (dBZ = 70 p - 10, R = 10^((dBZ - 10 log10 a) / (10 b)), a = 58.53, b = 1.56) or, with
  value_transform="rain_rate", the ground truth is the rain rate itself (then pred/target need not be in [0, 1]).
- "flow_mse": Farneback optical flow (OpenCV) of the prediction between consecutive frames vs that of the ground truth; per frame t the
  mean over pixels (optionally of a region y0:y1, x0:x1) of (u_p - u_g)^2 + (v_p - v_g)^2 in (pixels/frame)^2. Frame 0 needs the last
  observed frame (`last_input`); without it, frame 0 is undefined (NaN in arrays, null in `result()`) and the mean skips it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "MetricsError",
    "MetricConfig",
    "FlowConfig",
    "BalancedConfig",
    "MetricAccumulator",
    "evaluate_batch",
    "per_sample_metrics",
    "hko_pixel_to_rain_rate",
    "rain_rate_to_hko_pixel",
    "balancing_weights",
    "farneback_flow",
    "flow_endpoint_error",
]

ALL_METRICS = ("mse", "mse_pixel", "mae", "mae_pixel", "ssim", "psnr", "bmse", "bmae", "flow_mse")
# Optical flow costs ~10x the rest together (two Farneback flows per frame), and the paper uses it only for local analysis.
DEFAULT_METRICS = tuple(m for m in ALL_METRICS if m != "flow_mse")

HKO_A = 58.53  # Z-R coefficients of the HKO-7 benchmark (Shi et al. 2017), Z = a R^b
HKO_B = 1.56


class MetricsError(ValueError):
    """Invalid metric configuration or inputs (names the field and the allowed values)."""


def hko_pixel_to_rain_rate(pixel: np.ndarray, a: float = HKO_A, b: float = HKO_B) -> np.ndarray:
    """HKO-7 mapping pixel p in [0,1] -> rain rate R (mm/h): dBZ = 70 p - 10, R = 10^((dBZ - 10 log10 a) / (10 b))."""
    dbz = 70.0 * np.asarray(pixel, dtype=np.float64) - 10.0
    return 10.0 ** ((dbz - 10.0 * math.log10(a)) / (10.0 * b))


def rain_rate_to_hko_pixel(rate: np.ndarray, a: float = HKO_A, b: float = HKO_B) -> np.ndarray:
    """Inverse of `hko_pixel_to_rain_rate`, clipped to [0, 1]: p = (10 log10 a + 10 b log10 R + 10) / 70; R <= 0 -> 0."""
    r = np.asarray(rate, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        dbz = 10.0 * math.log10(a) + 10.0 * b * np.log10(np.where(r > 0, r, np.nan))
    p = (dbz + 10.0) / 70.0
    return np.clip(np.nan_to_num(p, nan=0.0), 0.0, 1.0)


@dataclass(frozen=True)
class BalancedConfig:
    """B-MSE weighting (Shi et al. 2017): weight weights[i] where thresholds[i-1] <= R < thresholds[i] (weights has one more entry)."""

    thresholds: tuple = (2.0, 5.0, 10.0, 30.0)  # mm/h
    weights: tuple = (1.0, 2.0, 5.0, 10.0, 30.0)
    value_transform: str = "hko"  # "hko": gt pixel -> R by the HKO mapping; "rain_rate": gt already is R in mm/h
    zr_a: float = HKO_A
    zr_b: float = HKO_B

    def __post_init__(self) -> None:
        th = tuple(float(t) for t in self.thresholds)
        w = tuple(float(x) for x in self.weights)
        if len(th) == 0 or any(b <= a for a, b in zip(th, th[1:])):
            raise MetricsError(f"bmse thresholds must be a non-empty strictly increasing sequence, got {self.thresholds!r}")
        if len(w) != len(th) + 1 or any(not math.isfinite(x) or x < 0 for x in w):
            raise MetricsError(
                f"bmse weights must be {len(th) + 1} finite numbers >= 0 (one more than thresholds), got {self.weights!r}"
            )
        if self.value_transform not in ("hko", "rain_rate"):
            raise MetricsError(f"value_transform must be 'hko' or 'rain_rate', got {self.value_transform!r}")
        if not (self.zr_a > 0 and self.zr_b > 0):
            raise MetricsError(f"zr_a and zr_b must be > 0, got {self.zr_a!r}, {self.zr_b!r}")
        object.__setattr__(self, "thresholds", th)
        object.__setattr__(self, "weights", w)


def balancing_weights(target: np.ndarray, config: BalancedConfig) -> np.ndarray:
    """Per-pixel B-MSE weights from the ground truth (same shape as target)."""
    rate = hko_pixel_to_rain_rate(target, config.zr_a, config.zr_b) if config.value_transform == "hko" else np.asarray(target, np.float64)
    idx = np.searchsorted(np.asarray(config.thresholds), rate, side="right")  # R == threshold falls in the upper bin, as in [2, 5)
    return np.asarray(config.weights)[idx]


@dataclass(frozen=True)
class FlowConfig:
    """Farneback optical flow parameters (OpenCV tutorial values) and the evaluation region (y0, y1, x0, x1) or None for the frame."""

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2
    region: tuple | None = None

    def __post_init__(self) -> None:
        if not 0 < self.pyr_scale < 1:
            raise MetricsError(f"flow pyr_scale must be in (0, 1), got {self.pyr_scale!r}")
        for name in ("levels", "winsize", "iterations"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise MetricsError(f"flow {name} must be an int >= 1, got {getattr(self, name)!r}")
        if self.poly_n not in (5, 7):
            raise MetricsError(f"flow poly_n must be 5 or 7, got {self.poly_n!r}")
        if self.region is not None:
            r = tuple(int(v) for v in self.region)
            if len(r) != 4 or not (0 <= r[0] < r[1] and 0 <= r[2] < r[3]):
                raise MetricsError(f"flow region must be (y0, y1, x0, x1) with 0 <= y0 < y1 and 0 <= x0 < x1, got {self.region!r}")
            object.__setattr__(self, "region", r)


@dataclass(frozen=True)
class MetricConfig:
    """Which metrics to compute and their settings."""

    metrics: tuple = DEFAULT_METRICS
    psnr_cap: float = 100.0  # dB; reached when mse_pixel <= 1e-10
    balanced: BalancedConfig = field(default_factory=BalancedConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)

    def __post_init__(self) -> None:
        names = tuple(self.metrics)
        unknown = [m for m in names if m not in ALL_METRICS]
        if unknown or not names or len(set(names)) != len(names):
            raise MetricsError(f"metrics must be distinct names from {ALL_METRICS}, got {self.metrics!r}")
        if not self.psnr_cap > 0:
            raise MetricsError(f"psnr_cap must be > 0, got {self.psnr_cap!r}")
        object.__setattr__(self, "metrics", names)

    def to_dict(self) -> dict:
        return asdict(self)


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().to("cpu").float().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise MetricsError(f"{name} must be a numeric array (B, n, C, H, W), got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


UNIT_SLACK = 1.0  # a model's unclamped output may overshoot [0, 1] a little; beyond this it is on another scale


def _check_unit_range(arr: np.ndarray, given: Any, name: str) -> None:
    """Frames must be in [0, 1]: uint8 or 0-255 floats would be scored without complaint and come out meaningless
    (SSIM 0.43 instead of 0.94, MSE x 65,000), so refuse them, naming the range found."""
    if arr.size == 0:
        return
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if lo < -UNIT_SLACK or hi > 1 + UNIT_SLACK:
        raise MetricsError(f"{name} ({getattr(given, 'dtype', arr.dtype)}) has values {lo:g}..{hi:g}, outside [0, 1]; "
                           f"metrics take frames in [0, 1]: pass {name} / 255 as float for 0-255 frames")


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.ndim != 5:
        raise MetricsError(f"pred must be (B, n, C, H, W), got shape {pred.shape}")
    if pred.shape != target.shape:
        raise MetricsError(f"pred and target must have the same shape (B, n, C, H, W), got {pred.shape} and {target.shape}")


def _ssim_frame(p: np.ndarray, t: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    if min(p.shape[-2:]) < 7:  # skimage's default 7x7 window would raise deep inside
        raise MetricsError(f"ssim needs frames of at least 7x7 pixels, got {p.shape[-2]}x{p.shape[-1]}; drop 'ssim' from metrics")
    if p.shape[0] == 1:
        return float(structural_similarity(t[0], p[0], data_range=1.0))
    return float(structural_similarity(t, p, data_range=1.0, channel_axis=0))


def _to_gray_u8(frame: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0,1] -> (H, W) uint8 for OpenCV (Rec. 601 luma for C = 3, channel mean otherwise)."""
    if frame.shape[0] == 3:
        g = 0.299 * frame[0] + 0.587 * frame[1] + 0.114 * frame[2]
    else:
        g = frame.mean(axis=0)
    return np.clip(np.rint(g * 255.0), 0, 255).astype(np.uint8)


def farneback_flow(prev: np.ndarray, nxt: np.ndarray, config: FlowConfig | None = None) -> np.ndarray:
    """Dense Farneback flow from frame prev to frame nxt, both (C, H, W) in [0,1] -> (H, W, 2) (dx, dy) in pixels per frame."""
    import cv2

    config = config if config is not None else FlowConfig()

    return cv2.calcOpticalFlowFarneback(
        _to_gray_u8(prev), _to_gray_u8(nxt), None,
        config.pyr_scale, config.levels, config.winsize, config.iterations, config.poly_n, config.poly_sigma, 0,
    )


def _flow_mse(pred_seq: np.ndarray, gt_seq: np.ndarray, last_input: np.ndarray | None, config: FlowConfig) -> np.ndarray:
    """(n, C, H, W) sequences -> (n,) flow MSE; frame 0 is NaN unless last_input (C, H, W) is given."""
    n = pred_seq.shape[0]
    out = np.full(n, np.nan)
    region = config.region
    if region is not None:
        h, w = pred_seq.shape[-2:]
        if region[1] > h or region[3] > w:
            raise MetricsError(f"flow region {region} lies outside the {h}x{w} frame")
    for t in range(n):
        if t == 0 and last_input is None:
            continue
        prev_p = last_input if t == 0 else pred_seq[t - 1]
        prev_g = last_input if t == 0 else gt_seq[t - 1]
        d = farneback_flow(prev_p, pred_seq[t], config) - farneback_flow(prev_g, gt_seq[t], config)  # (H, W, 2)
        if region is not None:
            d = d[region[0]:region[1], region[2]:region[3]]
        out[t] = float(np.mean(np.sum(d.astype(np.float64) ** 2, axis=-1)))
    return out


def flow_endpoint_error(pred: Any, true_flow: Any, last_input: Any, config: FlowConfig | None = None) -> np.ndarray:
    """Endpoint error (pixels) of the motion seen in predicted frames against physvid's exact flow (docs/flow.md).

    pred (B, n, C, H, W) in [0, 1]; true_flow (B, n, 2, H, W): for predicted frame t the exact flow (u, v) from the
    frame before it to it — physvid's `flow_forward[l - 1 + t]` for l observed frames; last_input (B, C, H, W) the
    last observed frame. The flow of the prediction is Farneback's (as `flow_mse`, the paper's Fig. 5b), so the score
    includes Farneback's own error: a perfect prediction scores the Farneback error on the true frames, which the
    true-frames row of a report should show beside it. Returns (B, n): per frame, the mean over pixels (or
    `config.region`) of ‖F_pred − F_true‖₂. Raises MetricsError on mismatched shapes.
    """
    config = config if config is not None else FlowConfig()
    p, f, li = _to_numpy(pred, "pred"), _to_numpy(true_flow, "true_flow"), _to_numpy(last_input, "last_input")
    b, n = p.shape[:2]
    if f.shape != (b, n, 2) + p.shape[-2:] or li.shape != (b,) + p.shape[2:]:
        raise MetricsError(f"flow_endpoint_error needs true_flow (B, n, 2, H, W) = {(b, n, 2) + p.shape[-2:]} and "
                           f"last_input (B, C, H, W) = {(b,) + p.shape[2:]}, got {f.shape} and {li.shape}")
    region = config.region or (0, p.shape[-2], 0, p.shape[-1])
    out = np.empty((b, n))
    for i in range(b):
        for t in range(n):
            est = farneback_flow(li[i] if t == 0 else p[i, t - 1], p[i, t], config)  # (H, W, 2)
            d = est.astype(np.float64) - np.moveaxis(f[i, t], 0, -1)
            d = d[region[0]:region[1], region[2]:region[3]]
            out[i, t] = float(np.mean(np.hypot(d[..., 0], d[..., 1])))
    return out


def field_endpoint_error(field: Any, true_field: Any) -> np.ndarray:
    """Endpoint error (pixels) of a predicted displacement field against the exact one: (B, n), per frame the mean
    over pixels of ‖w − w_true‖₂.

    field, true_field (B, n, 2, H, W), channels (x along columns, y along rows) in pixels, on the same grid. For
    ADDL's advection field (I_{t+1}(x) = I_t(x − w(x)), stmoe.models.addl.recording_fields) the exact field is minus
    physvid's backward flow of the pair t → t+1 (x + flow_backward(x) is where x's content was at t). Raises
    MetricsError on mismatched shapes."""
    w, f = _to_numpy(field, "field"), _to_numpy(true_field, "true_field")
    if w.ndim != 5 or w.shape[2] != 2 or w.shape != f.shape:
        raise MetricsError(f"field_endpoint_error needs field and true_field of one shape (B, n, 2, H, W), got "
                           f"{w.shape} and {f.shape}")
    d = w.astype(np.float64) - f.astype(np.float64)
    return np.hypot(d[:, :, 0], d[:, :, 1]).mean(axis=(-2, -1))


def frame_mse(pred: Any, target: Any) -> Any:
    """The tables' ``mse`` per frame: the squared error summed over C, H, W, (B, n, C, H, W) -> (B, n). NumPy arrays
    or torch tensors (a tensor stays on its device, so validation reads it back once). The one definition that
    validation (``val_mse``, stmoe.train.trainer) and evaluation (:func:`per_sample_metrics`) share."""
    err = pred - target
    sq = err * err
    return sq.reshape(*sq.shape[:2], -1).sum(-1)


def per_sample_metrics(pred: Any, target: Any, config: MetricConfig | None = None, last_input: Any = None) -> dict[str, np.ndarray]:
    """Metrics per sequence and frame: {name: (B, n)} for pred, target (B, n, C, H, W) in [0,1] (numpy or torch).

    last_input: the last observed frame (B, C, H, W), used only by flow_mse for the first predicted frame.
    """
    cfg = config if config is not None else MetricConfig()
    p = _to_numpy(pred, "pred")
    t = _to_numpy(target, "target")
    _check_pair(p, t)
    if cfg.balanced.value_transform != "rain_rate":  # rain rates in mm/h are not frames in [0, 1]
        for arr, given, name in ((p, pred, "pred"), (t, target, "target")):
            _check_unit_range(arr, given, name)
    B, n = p.shape[:2]
    want = set(cfg.metrics)
    out: dict[str, np.ndarray] = {}
    err = p - t
    sq = err * err
    if "mse" in want:
        out["mse"] = frame_mse(p, t)
    if "mse_pixel" in want or "psnr" in want:
        mse_pixel = sq.mean(axis=(2, 3, 4))
        if "mse_pixel" in want:
            out["mse_pixel"] = mse_pixel
        if "psnr" in want:
            floor = 10.0 ** (-cfg.psnr_cap / 10.0)  # mse at which 10 log10(1/mse) equals the cap
            out["psnr"] = 10.0 * np.log10(1.0 / np.maximum(mse_pixel, floor))
    if "mae" in want:
        out["mae"] = np.abs(err).sum(axis=(2, 3, 4))
    if "mae_pixel" in want:
        out["mae_pixel"] = np.abs(err).mean(axis=(2, 3, 4))
    if "bmse" in want or "bmae" in want:
        w = balancing_weights(t, cfg.balanced)
        if "bmse" in want:
            out["bmse"] = (w * sq).sum(axis=(2, 3, 4))
        if "bmae" in want:
            out["bmae"] = (w * np.abs(err)).sum(axis=(2, 3, 4))
    if "ssim" in want:
        out["ssim"] = np.array([[_ssim_frame(p[b, i], t[b, i]) for i in range(n)] for b in range(B)])
    if "flow_mse" in want:
        li = None
        if last_input is not None:
            li = _to_numpy(last_input, "last_input")
            if li.shape != (B,) + p.shape[2:]:
                raise MetricsError(f"last_input must be (B, C, H, W) = {(B,) + p.shape[2:]}, got {li.shape}")
        out["flow_mse"] = np.stack([_flow_mse(p[b], t[b], None if li is None else li[b], cfg.flow) for b in range(B)])
    return {k: out[k] for k in cfg.metrics}


def evaluate_batch(pred: Any, target: Any, config: MetricConfig | None = None, last_input: Any = None) -> dict[str, np.ndarray]:
    """Batch mean per predicted frame: {name: (n,)}; flow_mse[0] is NaN without last_input."""
    return {k: v.mean(axis=0) for k, v in per_sample_metrics(pred, target, config, last_input).items()}


class MetricAccumulator:
    """Running per-frame sums over batches; `result()` gives per-frame means over all sequences and their mean over frames."""

    def __init__(self, config: MetricConfig | None = None):
        self.config = config if config is not None else MetricConfig()
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, np.ndarray] = {}
        self.count = 0
        self.num_frames: int | None = None

    def update(self, pred: Any, target: Any, last_input: Any = None) -> dict[str, np.ndarray]:
        """Add a batch (B, n, C, H, W) in [0,1]; returns this batch's evaluate_batch-style per-frame means."""
        per = per_sample_metrics(pred, target, self.config, last_input)
        n = next(iter(per.values())).shape[1]
        if self.num_frames is None:
            self.num_frames = n
            self._sums = {k: np.zeros(n) for k in per}
            self._counts = {k: np.zeros(n, dtype=np.int64) for k in per}
        elif n != self.num_frames:
            raise MetricsError(f"every batch must predict the same number of frames n; got {n} after {self.num_frames}")
        for k, v in per.items():
            ok = np.isfinite(v)
            self._sums[k] += np.where(ok, v, 0.0).sum(axis=0)
            self._counts[k] += ok.sum(axis=0)
        self.count += next(iter(per.values())).shape[0]
        with np.errstate(invalid="ignore"):
            return {k: v.mean(axis=0) for k, v in per.items()}

    def result(self) -> dict:
        """{"per_frame": {metric: [n floats or None]}, "mean": {metric: float or None}, "count": N sequences}; JSON-serialisable."""
        per_frame: dict[str, list] = {}
        mean: dict[str, float | None] = {}
        for k in self.config.metrics:
            if self.num_frames is None:
                per_frame[k], mean[k] = [], None
                continue
            c = self._counts[k]
            pf = [float(s / ct) if ct else None for s, ct in zip(self._sums[k], c)]
            per_frame[k] = pf
            defined = [v for v in pf if v is not None]
            # Every defined frame has the same count N, so the mean over frames equals the mean over all (sequence, frame) pairs.
            mean[k] = float(np.mean(defined)) if defined else None
        return {"per_frame": per_frame, "mean": mean, "count": int(self.count)}
