"""Evaluation metrics (paper §4) against hand-computed values and scikit-image."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from stmoe.metrics import (
    ALL_METRICS,
    BalancedConfig,
    FlowConfig,
    MetricAccumulator,
    MetricConfig,
    MetricsError,
    balancing_weights,
    evaluate_batch,
    hko_pixel_to_rain_rate,
    per_sample_metrics,
    rain_rate_to_hko_pixel,
)


def random_pair(seed: int, shape=(2, 3, 1, 16, 16)):
    rng = np.random.default_rng(seed)
    target = rng.random(shape)
    pred = np.clip(target + 0.1 * rng.standard_normal(shape), 0, 1)
    return pred, target


def test_pixel_metrics_by_hand():
    target = np.zeros((1, 2, 1, 2, 2))
    pred = np.zeros_like(target)
    pred[0, 0, 0] = [[0.5, 0.0], [0.0, 0.0]]  # frame 0: one error of 0.5
    pred[0, 1, 0] = [[0.1, 0.1], [0.1, 0.1]]  # frame 1: four errors of 0.1
    m = per_sample_metrics(pred, target, MetricConfig(metrics=("mse", "mse_pixel", "mae", "mae_pixel", "psnr")))
    np.testing.assert_allclose(m["mse"], [[0.25, 0.04]])
    np.testing.assert_allclose(m["mse_pixel"], [[0.0625, 0.01]])
    np.testing.assert_allclose(m["mae"], [[0.5, 0.4]])
    np.testing.assert_allclose(m["mae_pixel"], [[0.125, 0.1]])
    np.testing.assert_allclose(m["psnr"], [[10 * math.log10(16), 20.0]])


def test_sum_convention_is_pixel_mean_times_chw():
    pred, target = random_pair(0, (2, 3, 3, 8, 12))
    m = per_sample_metrics(pred, target, MetricConfig(metrics=("mse", "mse_pixel", "mae", "mae_pixel")))
    np.testing.assert_allclose(m["mse"], m["mse_pixel"] * 3 * 8 * 12)
    np.testing.assert_allclose(m["mae"], m["mae_pixel"] * 3 * 8 * 12)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_and_psnr_match_scikit_image(channels):
    pred, target = random_pair(1, (2, 3, channels, 24, 24))
    m = per_sample_metrics(pred, target, MetricConfig(metrics=("ssim", "psnr")))
    for b in range(2):
        for t in range(3):
            p, g = pred[b, t], target[b, t]
            if channels == 1:
                ref = structural_similarity(g[0], p[0], data_range=1.0)
            else:
                ref = structural_similarity(g.transpose(1, 2, 0), p.transpose(1, 2, 0), data_range=1.0, channel_axis=2)
            assert m["ssim"][b, t] == pytest.approx(ref, abs=1e-12)
            assert m["psnr"][b, t] == pytest.approx(peak_signal_noise_ratio(g, p, data_range=1.0), rel=1e-12)


def test_identical_frames():
    _, target = random_pair(2)
    m = evaluate_batch(target, target, MetricConfig(metrics=("mse", "ssim", "psnr", "flow_mse")))
    np.testing.assert_allclose(m["mse"], 0.0)
    np.testing.assert_allclose(m["ssim"], 1.0)
    np.testing.assert_allclose(m["psnr"], 100.0)  # capped, finite
    assert np.isnan(m["flow_mse"][0]) and np.all(m["flow_mse"][1:] == 0.0)


def test_hko_mapping_by_hand_and_round_trip():
    # p = 0.5 -> dBZ = 25 -> R = 10^((25 - 10 log10 58.53) / 15.6)
    expected = 10 ** ((25 - 10 * math.log10(58.53)) / 15.6)
    assert hko_pixel_to_rain_rate(np.array(0.5)) == pytest.approx(expected)
    rates = np.array([0.5, 2.0, 5.0, 10.0, 30.0, 100.0])
    np.testing.assert_allclose(hko_pixel_to_rain_rate(rain_rate_to_hko_pixel(rates)), rates, rtol=1e-12)
    assert rain_rate_to_hko_pixel(np.array([0.0, -1.0, 1e6])).tolist() == [0.0, 0.0, 1.0]


def test_balancing_weights_thresholds():
    rates = np.array([0.0, 1.99, 2.0, 4.9, 5.0, 9.99, 10.0, 29.9, 30.0, 80.0])
    w = balancing_weights(rates, BalancedConfig(value_transform="rain_rate"))
    assert w.tolist() == [1, 1, 2, 2, 5, 5, 10, 10, 30, 30]
    w_hko = balancing_weights(rain_rate_to_hko_pixel(np.array([1.0, 3.0, 7.0, 20.0, 40.0])), BalancedConfig())
    assert w_hko.tolist() == [1, 2, 5, 10, 30]


def test_bmse_hand_made_case():
    target = np.zeros((1, 1, 1, 2, 3))
    target[0, 0, 0] = rain_rate_to_hko_pixel(np.array([[0.1, 3.0, 6.0], [12.0, 50.0, 1.0]]))
    pred = target.copy()
    pred[0, 0, 0, 0, 1] += 0.1  # weight 2
    pred[0, 0, 0, 1, 1] -= 0.2  # weight 30
    pred[0, 0, 0, 1, 2] += 0.3  # weight 1
    m = per_sample_metrics(pred, target, MetricConfig(metrics=("bmse", "bmae", "mse")))
    assert m["bmse"][0, 0] == pytest.approx(2 * 0.01 + 30 * 0.04 + 1 * 0.09)
    assert m["bmae"][0, 0] == pytest.approx(2 * 0.1 + 30 * 0.2 + 1 * 0.3)
    assert m["mse"][0, 0] == pytest.approx(0.01 + 0.04 + 0.09)


def test_bmse_custom_thresholds_on_rain_rates():
    cfg = MetricConfig(metrics=("bmse",), balanced=BalancedConfig(thresholds=(1.0,), weights=(0.5, 4.0), value_transform="rain_rate"))
    target = np.array([0.5, 3.0]).reshape(1, 1, 1, 1, 2)
    pred = target + 1.0
    assert per_sample_metrics(pred, target, cfg)["bmse"][0, 0] == pytest.approx(4.5)


def moving_square(n: int, dx: int, size: int = 64, start: int = 8) -> np.ndarray:
    """(n, 1, size, size): a smooth blob moving dx pixels per frame to the right."""
    yy, xx = np.mgrid[0:size, 0:size]
    frames = [np.exp(-(((yy - 16) ** 2) + (xx - start - dx * t) ** 2) / 18.0) for t in range(n)]
    return np.stack(frames)[:, None]


def test_flow_mse_zero_for_identical_and_positive_for_different_motion():
    gt = moving_square(4, 2)[None]
    still = np.repeat(moving_square(1, 0)[None], 4, axis=1)
    cfg = MetricConfig(metrics=("flow_mse",))
    same = evaluate_batch(gt, gt, cfg)["flow_mse"]
    assert np.isnan(same[0]) and np.all(same[1:] == 0)
    diff = evaluate_batch(still, gt, cfg)["flow_mse"]
    assert np.all(diff[1:] > 0.5)  # the ground truth moves ~2 px/frame, the prediction not at all
    with_last = evaluate_batch(still, gt, cfg, last_input=gt[:, 0])["flow_mse"]
    assert np.isfinite(with_last).all()
    far = MetricConfig(metrics=("flow_mse",), flow=FlowConfig(region=(48, 64, 48, 64)))  # a corner the blob never reaches
    assert np.all(evaluate_batch(still, gt, far)["flow_mse"][1:] < 1e-6)
    near = MetricConfig(metrics=("flow_mse",), flow=FlowConfig(region=(8, 24, 4, 28)))  # around the blob: larger than the frame mean
    assert np.all(evaluate_batch(still, gt, near)["flow_mse"][1:] > diff[1:])


def test_accumulator_equals_one_big_batch_and_is_json():
    pred, target = random_pair(3, (5, 4, 1, 16, 16))
    cfg = MetricConfig(metrics=ALL_METRICS)
    big = MetricAccumulator(cfg)
    big.update(pred, target)
    acc = MetricAccumulator(cfg)
    acc.update(pred[:2], target[:2])
    acc.update(pred[2:], target[2:])
    r1, r2 = big.result(), acc.result()
    assert r2["count"] == 5 and set(r2["per_frame"]) == set(ALL_METRICS)
    for k in ALL_METRICS:
        a = np.array([np.nan if v is None else v for v in r1["per_frame"][k]])
        b = np.array([np.nan if v is None else v for v in r2["per_frame"][k]])
        np.testing.assert_allclose(a, b, rtol=1e-12)
        assert r2["mean"][k] == pytest.approx(np.nanmean(b))
    assert r2["per_frame"]["flow_mse"][0] is None  # undefined without the last observed frame
    np.testing.assert_allclose(r2["per_frame"]["mse"], per_sample_metrics(pred, target)["mse"].mean(axis=0))
    assert "flow_mse" not in MetricAccumulator().result()["mean"]  # flow is opt-in (cost)
    json.dumps(r2, allow_nan=False)


def test_accumulator_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    pred, target = random_pair(4)
    acc = MetricAccumulator(MetricConfig(metrics=("mse", "ssim")))
    acc.update(torch.from_numpy(pred).float(), torch.from_numpy(target).float())
    ref = evaluate_batch(pred.astype(np.float32), target.astype(np.float32), MetricConfig(metrics=("mse", "ssim")))
    np.testing.assert_allclose(acc.result()["per_frame"]["mse"], ref["mse"], rtol=1e-6)


def test_bad_inputs():
    pred, target = random_pair(5)
    with pytest.raises(MetricsError, match="same shape"):
        evaluate_batch(pred, target[:, :2])
    with pytest.raises(MetricsError, match=r"\(B, n, C, H, W\)"):
        evaluate_batch(pred[0], target[0])
    with pytest.raises(MetricsError, match="metrics must be"):
        MetricConfig(metrics=("mse", "lpips"))
    with pytest.raises(MetricsError, match="bmse weights"):
        BalancedConfig(weights=(1.0, 2.0))
    with pytest.raises(MetricsError, match="region"):
        evaluate_batch(pred, target, MetricConfig(metrics=("flow_mse",), flow=FlowConfig(region=(0, 40, 0, 4))))
    with pytest.raises(MetricsError, match="7x7"):
        evaluate_batch(pred[..., :5, :5], target[..., :5, :5], MetricConfig(metrics=("ssim",)))
    acc = MetricAccumulator(MetricConfig(metrics=("mse",)))
    acc.update(pred, target)
    with pytest.raises(MetricsError, match="same number of frames"):
        acc.update(pred[:, :2], target[:, :2])
