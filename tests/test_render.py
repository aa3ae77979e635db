"""The renderer end to end: presets, physics, determinism, noise ratio, the whole-pipeline twin, and bad input."""
import gzip
import json
import math

import numpy as np
import pytest

import physvid as pv
from physvid import reference as ref
from physvid.render import render_clean, render_sequence, sample_scene, sequence_rngs, trajectory

NO_TEXTURE = pv.TextureConfig(object_probability=0.0)


@pytest.fixture(scope="module")
def digits(shared_data):
    path = shared_data / "mnist" / "t10k-images-idx3-ubyte.gz"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return str(path)


def _clean(cfg, index):
    scene, _ = sequence_rngs(cfg.seed, index, cfg.property)
    p = sample_scene(cfg, index, scene)
    clean, _, _ = render_clean(cfg, p)
    return clean, p


@pytest.mark.parametrize("prop", ["translation", "rotation", "intensity", "all", "mixed"])
@pytest.mark.parametrize("channels", [1, 3])
def test_presets_dtype_shape_range(prop, channels):
    cfg = pv.RenderConfig(property=prop, channels=channels, height=32, width=40, frames=5,
                          noise=pv.NoiseConfig(ratio=0.3), masks=True, property_maps=True)
    video, params = pv.render(cfg, [0, 1, 2, 7])
    assert video.dtype == np.uint8 and video.shape == (4, 5, channels, 32, 40)
    assert video.max() > 0
    assert params["masks"].shape == (4, 5, cfg.max_objects, 32, 40)
    assert params["property_map"].shape == (4, 5, 32, 40) and params["property_map"].max() <= 3
    assert params["x0"].shape == (4, cfg.max_objects)


def test_dynamic_mnist_preset(digits):
    cfg = pv.RenderConfig(property="dynamic-mnist", shape=pv.ShapeConfig(digits=digits, size=(20.0, 26.0)),
                          property_maps=True)
    video, params = pv.render(cfg, [0, 1])
    assert video.shape == (2, 10, 1, 64, 64)
    for row in range(2):
        assert sorted(params["role"][row]) == [1, 2, 3]
        assert (params["shape"][row] == 6).all() and (params["digit"][row] >= 0).all()
        assert set(np.unique(params["property_map"][row])) >= {1, 2, 3}


def test_all_is_balanced():
    cfg = pv.RenderConfig(property="all", height=16, width=16, frames=2)
    _, params = pv.render(cfg, range(30))
    assert np.bincount(params["sequence_role"], minlength=4).tolist() == [0, 10, 10, 10]


def test_mixed_has_several_properties():
    cfg = pv.RenderConfig(property="mixed", height=32, width=32, frames=3)
    _, params = pv.render(cfg, range(20))
    for row in range(20):
        roles = params["role"][row][params["role"][row] > 0]
        assert len(roles) >= 2 and len(set(roles)) >= 2


def test_translation_conserves_intensity_and_follows_trajectory():
    cfg = pv.RenderConfig(property="translation", height=96, width=96, frames=8, texture=NO_TEXTURE,
                          shape=pv.ShapeConfig(num_objects=(1, 1), shapes=("circle",), size=(10.0, 12.0)),
                          motion=pv.MotionConfig(speed=(1.0, 2.0), acceleration=(0.1, 0.2), jerk=(0.01, 0.02),
                                                 boundary="free"))
    for index in range(3):
        clean, p = _clean(cfg, index)
        # keep the object fully inside for the check
        pose = trajectory(p, 0, cfg.frames, cfg.height, cfg.width, "free")
        if not ((pose[:, :2] > 8).all() and (pose[:, :2] < 88).all()):
            continue
        mass = clean[:, 0].sum(axis=(1, 2))
        np.testing.assert_allclose(mass, mass[0], rtol=0.01)
        y, x = np.mgrid[0:96, 0:96]
        cx = (clean[:, 0] * x).sum(axis=(1, 2)) / mass
        cy = (clean[:, 0] * y).sum(axis=(1, 2)) / mass
        t = np.arange(cfg.frames)
        expect_x = p["x0"][0] + p["vx"][0] * t + p["ax"][0] * t ** 2 / 2 + p["jx"][0] * t ** 3 / 6
        expect_y = p["y0"][0] + p["vy"][0] * t + p["ay"][0] * t ** 2 / 2 + p["jy"][0] * t ** 3 / 6
        np.testing.assert_allclose(cx, expect_x, atol=0.05)
        np.testing.assert_allclose(cy, expect_y, atol=0.05)


def test_bounce_keeps_objects_inside():
    cfg = pv.RenderConfig(property="translation", height=32, width=32, frames=30, texture=NO_TEXTURE,
                          motion=pv.MotionConfig(speed=(3.0, 4.0)))
    for index in range(5):
        _, p = _clean(cfg, index)
        for k in range(int(p["num_objects"])):
            pose = trajectory(p, k, 30, 32, 32, "bounce")
            r = p["size"][k] / 2
            assert (pose[:, 0] >= r - 1e-9).all() and (pose[:, 0] <= 31 - r + 1e-9).all()


def test_wrap_reenters_on_the_other_side():
    cfg = pv.RenderConfig(property="translation", height=32, width=32, frames=12, texture=NO_TEXTURE,
                          shape=pv.ShapeConfig(num_objects=(1, 1), shapes=("circle",), size=(8.0, 8.0)),
                          motion=pv.MotionConfig(speed=(5.0, 5.0), acceleration=(0, 0), jerk=(0, 0), boundary="wrap"))
    clean, p = _clean(cfg, 0)
    mass = clean[:, 0].sum(axis=(1, 2))
    np.testing.assert_allclose(mass, mass[0], rtol=0.02)  # nothing is lost at the edges


def test_rotation_keeps_area_and_position():
    cfg = pv.RenderConfig(property="rotation", frames=10, texture=NO_TEXTURE,
                          shape=pv.ShapeConfig(shapes=("rectangle", "polygon", "irregular", "line")))
    for index in range(4):
        clean, p = _clean(cfg, index)
        mass = clean[:, 0].sum(axis=(1, 2))
        if int(p["num_objects"]) == 1:
            np.testing.assert_allclose(mass, mass[0], rtol=0.03)
        assert np.all(p["vx"][: int(p["num_objects"])] == 0)
        assert np.all(p["angular_velocity"][: int(p["num_objects"])] != 0)
        assert not np.array_equal(clean[0], clean[-1])


@pytest.mark.parametrize("kernel", ["gaussian", "box", "delta"])
def test_intensity_grows_iff_gain_above_one(kernel):
    for grow in (0.0, 1.0):
        cfg = pv.RenderConfig(property="intensity", frames=6, texture=NO_TEXTURE,
                              shape=pv.ShapeConfig(num_objects=(1, 1), brightness=(0.3, 0.4)),
                              intensity=pv.IntensityConfig(grow_probability=grow, kernel=kernel))
        for index in range(3):
            clean, p = _clean(cfg, index)
            mass = clean[:, 0].sum(axis=(1, 2))
            g = p["gain"][0]
            assert (g > 1) == bool(grow)
            diffs = np.diff(mass)
            assert (diffs > 0).all() if g > 1 else (diffs < 0).all()
            if kernel != "delta" or g < 1:
                # before saturation the mass follows g^t exactly (the kernel sums to g)
                np.testing.assert_allclose(mass[1] / mass[0], g, rtol=0.02)


def test_frame_scope_intensity_uses_one_gain():
    cfg = pv.RenderConfig(property="intensity", frames=5, texture=NO_TEXTURE,
                          shape=pv.ShapeConfig(brightness=(0.2, 0.3)),
                          intensity=pv.IntensityConfig(scope="frame", grow_probability=0.0))
    clean, p = _clean(cfg, 2)
    mass = clean[:, 0].sum(axis=(1, 2))
    assert p["frame_gain"] < 1
    np.testing.assert_allclose(mass[1:] / mass[:-1], p["frame_gain"], rtol=0.03)


def test_masks_and_property_map_agree_with_objects():
    cfg = pv.RenderConfig(property="mixed", texture=NO_TEXTURE, masks=True, property_maps=True,
                          shape=pv.ShapeConfig(num_objects=(3, 3)))
    seq = render_sequence(cfg, 4)
    visible = seq.clean[:, 0] >= 1 / 255
    covered = seq.masks.any(axis=1)
    assert np.array_equal(covered, visible)
    assert np.array_equal(seq.property_map > 0, visible)
    roles = seq.params["role"]
    for k in range(3):
        only_k = seq.masks[:, k].astype(bool) & (seq.masks.sum(axis=1) == 1)
        assert (seq.property_map[only_k] == roles[k]).all()


def test_same_seed_same_bytes_and_order_independence():
    cfg = pv.RenderConfig(property="mixed", noise=pv.NoiseConfig(ratio=0.5), height=32, width=32, frames=4)
    a, pa = pv.render(cfg, [0, 1, 2, 3])
    b, pb = pv.render(cfg, [3, 1, 0, 2])
    assert a.tobytes() == pv.render(cfg, [0, 1, 2, 3])[0].tobytes()
    np.testing.assert_array_equal(a[[3, 1, 0, 2]], b)
    np.testing.assert_array_equal(pa["x0"][[3, 1, 0, 2]], pb["x0"])
    assert not np.array_equal(a[0], a[1])
    other = pv.render(cfg.replace(seed=1), [0])[0]
    assert not np.array_equal(a[0], other[0])


def test_presets_do_not_share_scenes():
    a = pv.render(pv.RenderConfig(property="translation", frames=2), [0])[1]
    b = pv.render(pv.RenderConfig(property="rotation", frames=2), [0])[1]
    assert a["x0"][0, 0] != b["x0"][0, 0]


def test_clean_signal_does_not_depend_on_noise_settings():
    base = pv.RenderConfig(property="all", height=32, width=32, frames=4)
    noisy = base.replace(**{"noise.ratio": 0.7, "noise.perlin": 3.0})
    for i in range(3):
        np.testing.assert_array_equal(render_sequence(base, i).clean, render_sequence(noisy, i).clean)


@pytest.mark.parametrize("ratio", [0.1, 0.26, 0.5, 0.7])
@pytest.mark.parametrize("mix", [(1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1)])
def test_noise_ratio_after_clipping_and_quantisation(ratio, mix):
    base = pv.RenderConfig(property="all", frames=6)
    noisy = base.replace(**{"noise.ratio": ratio, "noise.gaussian": mix[0], "noise.white": mix[1],
                            "noise.perlin": mix[2]})
    for i in range(4):
        clean = pv.render(base, [i])[0].astype(np.float64)
        dirty = pv.render(noisy, [i])[0].astype(np.float64)
        measured = np.abs(dirty - clean).sum() / clean.sum()
        assert measured == pytest.approx(ratio, rel=0.10), (i, measured)


def test_perlin_noise_evolves_smoothly():
    cfg = pv.RenderConfig(property="all", frames=6, noise=pv.NoiseConfig(ratio=0.7, gaussian=0, white=0))
    clean = pv.render(cfg.replace(**{"noise.ratio": 0.0}), [0])[0].astype(float)
    noisy = pv.render(cfg, [0])[0].astype(float)
    diff = (noisy - clean)[0, :, 0]
    bg = clean[0, :, 0] == 0
    # consecutive frames of the noise are strongly correlated (a field that drifts and evolves, not flicker)
    both = bg[1:] & bg[:-1]
    corr = np.corrcoef(diff[1:][both], diff[:-1][both])[0, 1]
    assert corr > 0.6


def test_pipeline_matches_slow_reference():
    cfg = pv.RenderConfig(property="mixed", height=40, width=40, frames=5,
                          texture=pv.TextureConfig(object_probability=0.5, background_probability=0.5))
    for i in range(3):
        clean, p = _clean(cfg, i)
        slow = ref.render_clean_reference(cfg, p)
        assert np.abs(clean - slow).mean() < 0.01
        assert np.abs(clean - slow).max() < 0.5  # anti-aliasing approximations differ at single rim pixels


def test_pipeline_matches_reference_with_digits(digits):
    cfg = pv.RenderConfig(property="dynamic-mnist", frames=4, shape=pv.ShapeConfig(digits=digits))
    clean, p = _clean(cfg, 1)
    np.testing.assert_allclose(clean, ref.render_clean_reference(cfg, p), atol=1e-4)


def test_config_round_trip_and_errors():
    cfg = pv.RenderConfig(property="rotation", noise=pv.NoiseConfig(ratio=0.26), masks=True)
    again = pv.RenderConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(pv.ConfigError, match="unknown config key noise.ratoi"):
        pv.RenderConfig.from_dict({"noise": {"ratoi": 1}})
    with pytest.raises(pv.ConfigError, match="frames must be an integer"):
        pv.RenderConfig.from_dict({"frames": "ten"})


@pytest.mark.parametrize("kwargs, message", [
    (dict(frames=1), "frames must be >= 2"),
    (dict(height=8), "height must be >= 16"),
    (dict(channels=2), "channels must be 1 or 3"),
    (dict(property="spin"), "unknown property 'spin'; allowed: translation, rotation, intensity, all, mixed, dynamic-mnist"),
    (dict(noise=dict(ratio=-0.1)), "noise.ratio must be >= 0.0"),
    (dict(motion=dict(speed=(3.0, 1.0))), "motion.speed is inverted"),
    (dict(motion=dict(speed=(-1.0, 1.0))), "motion.speed must be >= 0.0"),
    (dict(motion=dict(boundary="reflect")), "unknown motion.boundary 'reflect'; allowed: bounce, wrap, free"),
    (dict(shape=dict(shapes=["star"])), "unknown shape 'star'; allowed: circle, line"),
    (dict(shape=dict(shapes=["digit"])), "shape 'digit' needs shape.digits"),
    (dict(property="dynamic-mnist"), "property 'dynamic-mnist' needs shape.digits"),
    (dict(intensity=dict(kernel_size=4)), "intensity.kernel_size must be odd"),
    (dict(intensity=dict(gain=(0.99, 1.01))), "no-change band"),
    (dict(property="mixed", shape=dict(num_objects=(1, 1))), "needs shape.num_objects high >= 2"),
    (dict(noise=dict(perlin_octaves=0)), "noise.perlin_octaves must be >= 1"),
])
def test_bad_input_messages(kwargs, message):
    with pytest.raises(pv.ConfigError) as err:
        pv.RenderConfig.from_dict(kwargs)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_digits_file_errors(tmp_path):
    cfg_for = lambda path: pv.RenderConfig(property="dynamic-mnist", shape=pv.ShapeConfig(digits=str(path)))
    with pytest.raises(pv.DigitsError, match="digits file not found"):
        pv.render(cfg_for(tmp_path / "missing.gz"), [0])
    bad = tmp_path / "labels.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write((0x801).to_bytes(4, "big") + (3).to_bytes(4, "big") + b"\x01\x02\x03" * 4)
    with pytest.raises(pv.DigitsError, match="not an idx3 images file"):
        pv.render(cfg_for(bad), [0])
    short = tmp_path / "short"
    short.write_bytes((0x803).to_bytes(4, "big") + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 100)
    with pytest.raises(pv.DigitsError, match="truncated or corrupt"):
        pv.render(cfg_for(short), [0])
    junk = tmp_path / "junk.gz"
    junk.write_bytes(b"\x1f\x8b" + b"not really gzip")
    with pytest.raises(pv.DigitsError, match="corrupt or unreadable"):
        pv.render(cfg_for(junk), [0])


def test_negative_index_rejected():
    with pytest.raises(pv.ConfigError, match="indices must be >= 0"):
        pv.render(pv.RenderConfig(), [-1])


# ------------------------------------------------------------------------------ the batch kernel vs the Python path
def _batch_configs(digits_path):
    yield pv.RenderConfig(property="mixed", noise=pv.NoiseConfig(ratio=0.26),
                          texture=pv.TextureConfig(object_probability=1.0))
    yield pv.RenderConfig(property="all", channels=3, masks=True, property_maps=True,
                          noise=pv.NoiseConfig(ratio=0.7, perlin=0.0))
    yield pv.RenderConfig(property="intensity", height=24, width=40, frames=5, masks=True, property_maps=True,
                          texture=pv.TextureConfig(background_probability=0.5, drift=(0.1, 0.5)),
                          shape=pv.ShapeConfig(overlap="add"), motion=pv.MotionConfig(boundary="wrap"),
                          noise=pv.NoiseConfig(ratio=0.1, gaussian=0.0, white=0.0))
    yield pv.RenderConfig(property="translation", frames=3, motion=pv.MotionConfig(boundary="free"),
                          intensity=pv.IntensityConfig(kernel="box"),
                          shape=pv.ShapeConfig(shapes=("polygon", "irregular", "line"), num_objects=(1, 4)))
    if digits_path:
        yield pv.RenderConfig(property="dynamic-mnist", frames=4, masks=True, property_maps=True,
                              shape=pv.ShapeConfig(shapes=("digit",), digits=digits_path),
                              noise=pv.NoiseConfig(ratio=0.26, white=0.0))


def test_batch_kernel_matches_render_sequence(shared_data):
    """`render` samples and draws a whole batch in numba; `render_sequence` samples with the Python `sample_scene`.
    Both must give the same bytes, the same parameters (dtype included), masks and property maps."""
    path = shared_data / "mnist" / "t10k-images-idx3-ubyte.gz"
    indices = [0, 5, 17, 123, 999]
    for cfg in _batch_configs(str(path) if path.exists() else None):
        video, params = pv.render(cfg, indices)
        for row, i in enumerate(indices):
            seq = render_sequence(cfg, i)
            np.testing.assert_array_equal(video[row], seq.video, err_msg=f"{cfg.property} {i}")
            for name, value in seq.params.items():
                got = params[name][row]
                assert np.asarray(got).dtype == np.asarray(value).dtype or not isinstance(value, np.ndarray), name
                np.testing.assert_array_equal(got, value, err_msg=f"{cfg.property} {i} {name}")
            if cfg.masks:
                np.testing.assert_array_equal(params["masks"][row], seq.masks)
            if cfg.property_maps:
                np.testing.assert_array_equal(params["property_map"][row], seq.property_map)
        assert params["num_objects"].dtype == np.int64 and params["noise_scale"].dtype == np.float64


def test_packed_columns_follow_the_field_orders():
    from physvid import render as _  # noqa: F401  (the module, not the function)
    import importlib

    render_mod = importlib.import_module("physvid.render")
    from physvid.kernels import scene as sc

    floats = render_mod.OBJECT_FLOAT_FIELDS
    assert (sc.F_SIZE, sc.F_X0, sc.F_ANGLE0, sc.F_GAIN, sc.F_TEX_DRIFT) == tuple(
        floats.index(n) for n in ("size", "x0", "angle0", "gain", "tex_drift"))
    assert len(floats) == sc.N_FLOAT and len(render_mod.OBJECT_INT_FIELDS) == sc.N_INT
    assert render_mod.OBJECT_INT_FIELDS.index("textured") == sc.I_TEXTURED
    assert len(render_mod.SEQUENCE_FIELDS) == sc.N_SEQ
    assert render_mod.SEQUENCE_FIELDS.index("noise_ratio") == sc.S_NOISE_RATIO
    assert render_mod.pack_config(pv.RenderConfig(property="all")).size == sc.N_CONFIG


def test_stream_states_are_distinct_and_reproducible():
    import importlib

    render_mod = importlib.import_module("physvid.render")
    states = {(s, i, p, k): render_mod.stream_state(s, i, p, k)["state"]
              for s in (0, 1) for i in (0, 1, 2**40) for p in ("all", "mixed") for k in (0, 1)}
    pairs = {(v["state"], v["inc"]) for v in states.values()}
    assert len(pairs) == len(states)  # every (seed, index, preset, stream) gets its own generator
    assert all(v["inc"] % 2 == 1 for v in states.values())
    a, _ = sequence_rngs(3, 7, "all")
    b, _ = sequence_rngs(3, 7, "all")
    assert a.random(4).tolist() == b.random(4).tolist()
