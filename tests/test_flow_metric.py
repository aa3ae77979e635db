"""stmoe.metrics.flow_endpoint_error: the motion in predicted frames against an exact flow (issue 20)."""
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, shift

from stmoe.metrics import MetricsError, flow_endpoint_error

pytest.importorskip("cv2")


def _moving_texture(velocity, frames=5, size=48, seed=0):
    """A smooth random texture translated by `velocity` (u, v) px per frame: (1, T, 1, H, W) in [0, 1]."""
    base = gaussian_filter(np.random.default_rng(seed).random((size, size)), 2.0, mode="wrap")
    base = (base - base.min()) / (base.max() - base.min())
    return np.stack([shift(base, (velocity[1] * t, velocity[0] * t), order=3, mode="grid-wrap")
                     for t in range(frames)])[None, :, None]


def test_units_and_direction_against_a_known_translation():
    v = (1.0, 0.5)
    clip = _moving_texture(v, frames=6)
    truth = np.broadcast_to(np.array(v)[None, None, :, None, None], (1, 4, 2, 48, 48))
    good = flow_endpoint_error(clip[:, 1:5], truth, clip[:, 0])
    frozen = flow_endpoint_error(np.repeat(clip[:, :1], 4, axis=1), truth, clip[:, 0])
    backwards = flow_endpoint_error(clip[:, 1:5][:, ::-1], truth, clip[:, 5])  # the same motion, reversed
    speed = float(np.hypot(*v))
    assert good.shape == (1, 4) and (good < 0.25 * speed).all()
    np.testing.assert_allclose(frozen, speed, rtol=0.05)  # no motion seen: the whole true flow is missed
    assert (backwards > 1.5 * speed).all()


def test_mismatched_shapes_are_refused():
    with pytest.raises(MetricsError, match="true_flow"):
        flow_endpoint_error(np.zeros((1, 2, 1, 8, 8)), np.zeros((1, 2, 2, 8, 9)), np.zeros((1, 1, 8, 8)))
