"""Per-frame object state after the boundary rule and the rule's events (issue 20): kernel vs twin, and physics."""
import json

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import physvid as pv
from physvid import reference as ref
from physvid.kernels import motion as mk
from physvid.render import MOTION_FIELDS, object_states, render_sequence

SETTINGS = settings(max_examples=30, deadline=None)


def _coeffs(p, n):
    c = np.empty((n, 3, 4))
    for d, names in enumerate(MOTION_FIELDS):
        for j, name in enumerate(names):
            c[:, d, j] = p[name][:n]
    return c


@SETTINGS
@given(boundary=st.sampled_from(["free", "bounce", "wrap"]), seed=st.integers(0, 10_000), frames=st.integers(2, 25))
def test_motion_states_match_numpy(boundary, seed, frames):
    rng = np.random.default_rng(seed)
    n = 4
    p = {name: rng.normal(0, 3, n) for names in MOTION_FIELDS for name in names}
    p["x0"], p["y0"] = rng.uniform(0, 40, n), rng.uniform(0, 30, n)
    p["size"] = rng.uniform(4, 50, n)  # includes objects too big to move under bounce
    states = np.empty((n, frames, 6))
    events = np.empty((n, frames, 4), np.int8)
    code = mk.BOUNDARY_CODES[boundary]
    mk.motion_states(_coeffs(p, n), 0.5 * p["size"], 30, 40, code, states, events)
    want_states, want_events = ref.motion_states_reference(p, n, frames, 30, 40, boundary)
    np.testing.assert_allclose(states, want_states, atol=1e-3)
    np.testing.assert_array_equal(events, want_events)
    poses = np.empty((n, frames, 3))
    mk.integrate_poses(_coeffs(p, n), 0.5 * p["size"], 30, 40, code, poses)
    np.testing.assert_array_equal(states[..., :2], poses[..., :2])  # the state is where the object is drawn


def test_empty_slots_are_padded():
    p = {name: np.array([1.0, np.nan]) for names in MOTION_FIELDS for name in names}
    p["x0"], p["size"] = np.array([5.0, np.nan]), np.array([4.0, np.nan])
    states = np.empty((2, 3, 6))
    events = np.empty((2, 3, 4), np.int8)
    mk.motion_states(_coeffs(p, 2), 0.5 * p["size"], 30, 40, 1, states, events)
    assert np.isnan(states[1]).all() and (events[1] == -1).all() and (events[0] >= 0).all()


def _one_circle(boundary, frames=24, speed=(4.0, 5.0)):
    return pv.RenderConfig(property="translation", frames=frames, height=32, width=48, masks=True,
                           shape=pv.ShapeConfig(shapes=("circle",), num_objects=(1, 1), size=(8.0, 10.0),
                                                brightness=(1.0, 1.0)),
                           texture=pv.TextureConfig(object_probability=0.0),
                           motion=pv.MotionConfig(speed=speed, acceleration=(0.0, 0.0), jerk=(0.0, 0.0),
                                                  boundary=boundary))


def test_bounce_state_is_the_mask_centroid_and_events_flip_the_velocity():
    """The issue's complaint: after a bounce the stored coefficients put the object outside the frame. The state is
    where the pixels are (centroid of the clean intensity), and every wall event flips that axis' velocity."""
    cfg = _one_circle("bounce")
    seen = 0
    for i in range(6):
        seq = render_sequence(cfg, i)
        s = seq.params
        img = seq.clean[:, 0].astype(np.float64)  # (T, H, W): one untextured circle of brightness 1
        y, x = np.mgrid[:cfg.height, :cfg.width]
        mass = img.sum(axis=(1, 2))
        cx, cy = (img * x).sum(axis=(1, 2)) / mass, (img * y).sum(axis=(1, 2)) / mass
        np.testing.assert_allclose(cx, s["state_x"][:, 0], atol=0.02)
        np.testing.assert_allclose(cy, s["state_y"][:, 0], atol=0.02)
        mx = [np.mean(np.nonzero(m)[1]) for m in seq.masks[:, 0]]
        np.testing.assert_allclose(mx, s["state_x"][:, 0], atol=0.3)  # binary masks: within pixel quantisation
        ev = s["wall_events"][:, 0]  # (T, 4)
        for axis, cols in ((0, (0, 1)), (1, (2, 3))):
            v = s["state_vx" if axis == 0 else "state_vy"][:, 0]
            hits = ev[1:, cols[0]] + ev[1:, cols[1]]
            np.testing.assert_array_equal(np.sign(v[1:]) != np.sign(v[:-1]), hits % 2 == 1)
            seen += int(hits.sum())
        x_free = s["x0"][0] + s["vx"][0] * np.arange(cfg.frames)
        assert (s["state_x"][:, 0] >= 0).all() and (s["state_x"][:, 0] <= cfg.width - 1).all()
        if (x_free < 0).any() or (x_free > cfg.width - 1).any():
            assert ev[:, :2].sum() > 0  # it bounced, and the events say so
    assert seen >= 6  # 24 frames at 4-5 px/frame in a 48x32 frame: several bounces


def test_wrap_events_mark_the_jumps():
    cfg = _one_circle("wrap")
    for i in range(4):
        s = render_sequence(cfg, i).params
        x, ev = s["state_x"][:, 0], s["wall_events"][:, 0]
        jumped = np.abs(np.diff(x)) > cfg.width / 2
        np.testing.assert_array_equal(jumped, ev[1:, :2].sum(axis=1) > 0)
        np.testing.assert_array_equal(np.diff(x)[jumped] < 0, ev[1:, 1][jumped] > 0)  # leaves right, re-enters left
        np.testing.assert_allclose(s["state_vx"][:, 0], s["vx"][0])


def test_rotation_state_and_batch_path():
    cfg = pv.RenderConfig(property="rotation", frames=6, motion=pv.MotionConfig(angular_acceleration=(0.5, 1.0)))
    video, params = pv.render(cfg, [3, 4])
    for row, i in enumerate([3, 4]):
        p = render_sequence(cfg, i).params
        for name in mk.STATE_FIELDS + ("wall_events",):
            np.testing.assert_array_equal(params[name][row], p[name])
        t = np.arange(cfg.frames)[:, None]
        want = p["angle0"] + p["angular_velocity"] * t + p["angular_acceleration"] * t ** 2 / 2 \
            + p["angular_jerk"] * t ** 3 / 6
        np.testing.assert_allclose(p["state_angle"], want, atol=1e-9)
    assert params["state_x"].shape == (2, cfg.frames, cfg.max_objects)
    assert params["wall_events"].shape == (2, cfg.frames, cfg.max_objects, 4)
    again = object_states(cfg, {k: params[k] for k in ("size",) + tuple(n for f in MOTION_FIELDS for n in f)})
    np.testing.assert_array_equal(again["state_vx"], params["state_vx"])


def test_every_dataset_names_its_axes_and_codes(tmp_path):
    from physvid.kernels.raster import SHAPE_IDS

    pv.generate(pv.RenderConfig(property="mixed", frames=3, height=16, width=16, property_maps=True), 4,
                tmp_path / "d", workers=1)
    names = []
    with h5py.File(tmp_path / "d" / "shard-00000.h5") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                names.append(name)
                assert len(obj.attrs["axes"].split(",")) == obj.ndim, name
        f.visititems(visit)
        shapes = json.loads(f["params/shape"].attrs["labels"])
        assert {int(k): v for k, v in shapes.items()} == {v: k for k, v in SHAPE_IDS.items()}
        assert json.loads(f["params/role"].attrs["labels"])["2"] == "rotation"
        assert json.loads(f["property_map"].attrs["labels"])["0"] == "background"
        assert json.loads(f["params/wall_events"].attrs["columns"]) == ["left", "right", "top", "bottom"]
        assert f.attrs["format_version"] == "1.1"
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert all("axes" in spec for spec in manifest["datasets"].values())
    assert manifest["datasets"]["params/state_x"]["axes"] == "N,T,object"
    assert len(names) == len(manifest["datasets"])


@pytest.mark.parametrize("boundary", ["bounce", "wrap", "free"])
def test_event_list(boundary):
    cfg = _one_circle(boundary, frames=16)
    _, params = pv.render(cfg, range(3))
    events = pv.wall_events(params, boundary)
    total = int(params["wall_events"][params["wall_events"] > 0].sum())
    assert len(events) == total
    assert all(e["kind"] == boundary and e["wall"] in mk.WALLS and 1 <= e["frame"] < 16 for e in events)
    if boundary == "free":
        assert not events
