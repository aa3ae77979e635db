"""Each numba kernel against its slow twin in physvid/reference.py, on fixed cases and hypothesis-generated ones."""
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from physvid import reference as ref
from physvid.kernels import noise as nk
from physvid.kernels import raster as rk
from physvid.kernels.pipeline import KERNEL_CODES, gain_kernel
from physvid.render import VERTEX_DRAWS, _polygon, kernel_for

SETTINGS = settings(max_examples=25, deadline=None)


def _shape_args(shape, size, aspect, thickness, sides, seed):
    rng = np.random.default_rng(seed)
    verts = np.zeros((12, 2))
    n = 0
    if shape in ("polygon", "irregular"):
        n = sides
        verts[:n] = _polygon(rng.random(VERTEX_DRAWS), n, 0.5 * size, shape == "irregular")
    return rk.SHAPE_IDS[shape], 0.5 * size, aspect, min(thickness, size), verts, n


@SETTINGS
@given(shape=st.sampled_from(["circle", "line", "rectangle", "ellipse", "polygon", "irregular"]),
       size=st.floats(8, 30), aspect=st.floats(0.3, 1.0), thickness=st.floats(1.5, 5), sides=st.integers(3, 12),
       seed=st.integers(0, 2**31))
@example(shape="irregular", size=8.0, aspect=1.0, thickness=2.0, sides=3, seed=29)  # was a sub-pixel sliver
def test_sprite_coverage_matches_supersampled_area(shape, size, aspect, thickness, sides, seed):
    args = _shape_args(shape, size, aspect, thickness, sides, seed)
    side = int(math.ceil(size)) + 3
    fast = np.zeros((side, side), np.float32)
    rk.shape_sprite(*args, fast)
    slow = ref.coverage_reference(*args, side)
    # The 1-pixel box filter of the signed distance is exact on straight edges far from corners; area and outline agree.
    assert abs(fast.sum() - slow.sum()) <= 0.03 * slow.sum() + 1.5
    assert np.abs(fast - slow).mean() < 0.03
    assert np.abs(fast - slow).max() < 0.5
    interior = slow == 1.0
    assert (fast[interior] > 0.45).all()
    assert (fast[slow == 0.0] < 0.55).all()


def test_sprite_is_antialiased():
    out = np.zeros((31, 31), np.float32)
    rk.shape_sprite(0, 12.3, 1.0, 2.0, np.zeros((12, 2)), 0, out)
    edge = (out > 0) & (out < 1)
    assert edge.sum() > 20  # partial-coverage pixels along the whole rim: no jaggies
    assert abs(out.sum() - math.pi * 12.3 ** 2) < 0.01 * math.pi * 12.3 ** 2


@SETTINGS
@given(cx=st.floats(-5, 40), cy=st.floats(-5, 40), theta=st.floats(-7, 7), seed=st.integers(0, 1000))
def test_placement_matches_skimage_warp(cx, cy, theta, seed):
    rng = np.random.default_rng(seed)
    sprite = rng.random((15, 15)).astype(np.float32)
    fast = np.zeros((36, 36), np.float32)
    rk.object_layer(36, 36, sprite, cx, cy, theta, 15.0, False, fast)
    slow = ref.place_reference(sprite, cx, cy, theta, 36, 36)
    np.testing.assert_allclose(fast, slow, atol=2e-5)


def test_rotation_matches_skimage_rotate():
    """A square sprite placed at the centre of an equal-size frame equals skimage.transform.rotate (bilinear)."""
    from skimage.transform import rotate

    rng = np.random.default_rng(3)
    sprite = np.zeros((21, 21), np.float32)
    sprite[5:16, 7:14] = rng.random((11, 7))
    for deg in (0.0, 17.0, 90.0, 133.5):
        fast = np.zeros((21, 21), np.float32)
        rk.object_layer(21, 21, sprite, 10.0, 10.0, math.radians(deg), 30.0, False, fast)
        slow = rotate(sprite.astype(np.float64), deg, order=1, mode="constant", cval=0, preserve_range=True)
        np.testing.assert_allclose(fast, slow, atol=1e-5)


@SETTINGS
@given(side=st.integers(3, 40), freq=st.floats(0.05, 0.4), orient=st.floats(0, 3.2), phase=st.floats(0, 6.3),
       contrast=st.floats(0, 1), textured=st.booleans())
def test_texture_matches_numpy(side, freq, orient, phase, contrast, textured):
    tex = np.array([float(textured), freq, orient, phase, contrast])
    fast = np.zeros((side, side), np.float32)
    rk.texture_sprite(tex, fast)
    np.testing.assert_allclose(fast, ref.texture_reference(side, tex), atol=1e-6)
    assert fast.min() >= 1 - contrast - 1e-6 and fast.max() <= 1 + 1e-6


@SETTINGS
@given(size=st.sampled_from([1, 3, 5, 7]), kind=st.sampled_from(["gaussian", "box", "delta"]), gain=st.floats(0.5, 1.5),
       spread=st.floats(0.2, 2.0), seed=st.integers(0, 1000))
def test_convolution_matches_scipy(size, kind, gain, spread, seed):
    src = np.random.default_rng(seed).random((19, 23)).astype(np.float32)
    k = kernel_for(kind, size, gain, spread)
    assert k.sum() == pytest.approx(gain, rel=1e-5)
    compiled = np.empty((size, size), np.float32)  # the batch pipeline's kernel, twin of kernel_for
    gain_kernel(KERNEL_CODES[kind], size, gain, spread, compiled)
    np.testing.assert_allclose(compiled, k, rtol=1e-6, atol=1e-9)
    fast = np.empty_like(src)
    rk.convolve_same(src, k, fast)
    np.testing.assert_allclose(fast, ref.convolve_reference(src, k), atol=1e-5)


@SETTINGS
@given(side=st.integers(5, 30), lo=st.integers(0, 4), width=st.integers(0, 30), floor=st.sampled_from([0.0, 1e-7, 0.5]),
       seed=st.integers(0, 1000))
def test_mass_support_matches_numpy(side, lo, width, floor, seed):
    rng = np.random.default_rng(seed)
    img = np.where(rng.random((side, side)) < 0.1, rng.random((side, side)), 0.0).astype(np.float32)
    lo = min(lo, side)
    hi = min(side, lo + width)
    b_lo, b_hi, reach = rk.mass_support(img, lo, hi, np.float32(floor), 0.5 * (side - 1))
    r_lo, r_hi, r_reach = ref.mass_support_reference(img, lo, hi, np.float32(floor))
    assert (b_lo, b_hi) == (r_lo, r_hi)
    assert reach == pytest.approx(r_reach, rel=1e-12)


@SETTINGS
@given(theta=st.floats(-7, 7), cx=st.floats(-5, 45), cy=st.floats(-5, 35), lo=st.integers(0, 12), width=st.integers(1, 14),
       wrap=st.booleans(), additive=st.booleans(), seed=st.integers(0, 1000))
def test_draw_sprite_box_matches_whole_sprite(theta, cx, cy, lo, width, wrap, additive, seed):
    """Visiting only the pixels that can see the sprite's non-zero box changes nothing, bit for bit."""
    rng = np.random.default_rng(seed)
    s = 27
    hi = min(s, lo + width)
    sprite = np.zeros((s, s), np.float32)
    sprite[lo:hi, lo:hi] = rng.random((hi - lo, hi - lo)) + 0.01
    colour = np.array([0.7, 0.2], np.float32)
    results = []
    for box in ((0, s), (lo, hi)):
        frame = np.full((2, 30, 40), 0.1, np.float32)
        owner, vmax = np.zeros((30, 40), np.int16), np.full((30, 40), 0.05, np.float32)
        rk.draw_sprite_box(frame, owner, vmax, 3, sprite, cx, cy, theta, 0.75 * s, colour, wrap, additive, *box)
        results.append((frame, owner, vmax))
    for whole, boxed in zip(*results):
        np.testing.assert_array_equal(whole, boxed)
    if lo <= 13 < hi and 1 <= cx <= 38 and 1 <= cy <= 28:  # the sprite's centre is filled and in view: it was drawn
        assert (results[1][1] == 3).any()


def test_compose_tracked_support_matches_worst_case_reach():
    """Dropping evolving mass under SUPPORT_FLOOR (and drawing only its support) changes frames by numerical noise."""
    rng = np.random.default_rng(3)
    s, nt = 41, 10
    masses = np.zeros((2, s, s), np.float32)
    masses[:, 15:26, 15:26] = rng.random((2, 11, 11)).astype(np.float32)
    kernels = np.stack([kernel_for("gaussian", 3, 1.2, 0.7), kernel_for("box", 3, 0.85, 1.0)])
    tex = np.zeros((2, nt, 5))
    tex[:, :, :] = [1.0, 0.15, 0.4, 0.3, 0.6]
    tex[1, :, 3] += 0.2 * np.arange(nt)  # one drifting fill, re-made every frame
    poses = np.zeros((2, nt, 3))
    poses[0, :] = [20.0, 24.0, 0.3]
    poses[1, :] = [43.3, 40.1, -1.1]
    worst = 5.5 * np.sqrt(2) + 2 + np.arange(nt)[None, :].repeat(2, 0)  # covers everything the kernel can reach
    colours = np.array([[0.6], [0.9]], np.float32)
    bg = np.zeros((nt, 5))

    def frames(reaches, tracked):
        clean = np.zeros((nt, 1, 64, 64), np.float32)
        owner, vmax = np.zeros((nt, 64, 64), np.int16), np.zeros((nt, 64, 64), np.float32)
        evolve = np.array([True, True]) if tracked else np.array([False, False])
        if not tracked:  # the plain definition: M_t = K * M_{t-1} on the whole sprite, drawn with a generous reach
            sprites = []
            for k in range(2):
                m = [masses[k]]
                for _ in range(nt - 1):
                    m.append(ref.convolve_reference(m[-1], kernels[k]).astype(np.float32))
                sprites.append(m)
            for t in range(nt):
                for k in range(2):
                    fill = ref.texture_reference(s, tex[k, t]).astype(np.float32)
                    rk.draw_sprite(clean[t], owner[t], vmax[t], k + 1, sprites[k][t] * fill, *poses[k, t], 60.0,
                                   colours[k], False, True)
            return np.clip(clean, 0, 1)
        rk.compose_sequence(masses, kernels, evolve, tex, poses, reaches, colours, bg, True, False, clean, owner,
                            vmax, np.zeros((1, 1, 1, 1), np.uint8), False, np.zeros((1, 1, 1, 1), np.float32),
                            np.zeros((1, 1), np.int64), np.zeros((1, 1)), False)
        return clean

    tracked = frames(worst, True)
    plain = frames(worst, False)
    np.testing.assert_allclose(tracked, plain, atol=1e-5)
    assert tracked[-1].sum() > tracked[0].sum()  # the test sees the growing object


@given(st.lists(st.floats(0.0, 1.0, width=32), min_size=1, max_size=4))
def test_brightest_is_numpy_max(values):
    colour = np.array(values, np.float32)
    assert rk.brightest(colour) == colour.max()
    # float32 inside compiled code, as colour.max() was: the same products downstream
    assert all(str(sig.return_type) == "float32" for sig in rk.brightest.nopython_signatures)


def test_background_matches_numpy():
    fast = np.zeros((2, 20, 24), np.float32)
    rk.sine_background(fast, 0.4, 0.13, 0.7, 1.1, 0.9)
    slow = ref.background_reference(20, 24, 0.4, 0.13, 0.7, 1.1, 0.9)
    np.testing.assert_allclose(fast[0], slow, atol=1e-6)
    np.testing.assert_array_equal(fast[0], fast[1])


def test_digit_resample_matches_skimage():
    digit = np.random.default_rng(0).random((28, 28)).astype(np.float32)
    fast = np.zeros((27, 27), np.float32)
    rk.resample_sprite(digit, 22.5, fast)
    np.testing.assert_allclose(fast, ref.digit_sprite_reference(digit, 22.5, 27), atol=2e-5)


@SETTINGS
@given(key=st.integers(0, 2**63 - 1), n=st.integers(1, 50))
def test_hash_noise_matches_numpy(key, n):
    for table in (nk.gaussian_table(), nk.uniform_table()):
        fast = np.empty((n, 3), np.float32)
        nk.hash_fill(np.uint64(key), table, fast)
        np.testing.assert_array_equal(fast, ref.hash_fill_reference(key, table, (n, 3)))


@pytest.mark.parametrize("shape", [(3, 1, 8, 12), (2, 3, 5, 7)])  # one channel; channels and planes of odd size
@pytest.mark.parametrize("weights", [(0.7, -1.5, True), (0.0, 2.0, True), (1.2, 0.0, False)])
def test_mix_noise_is_the_weighted_sum_of_the_fields(shape, weights):
    wg, wu, with_perlin = weights
    perlin = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    scales = np.array([0.5, 0.0, 2.5][:shape[1]]) if with_perlin else np.zeros(0)
    out = perlin.copy() if with_perlin else np.full(shape, np.nan, np.float32)  # not read without Perlin
    nk.mix_noise(np.uint64(11), nk.gaussian_table(), wg, np.uint64(99), wu, scales, out)
    np.testing.assert_array_equal(out, ref.mix_noise_reference(11, wg, 99, wu, scales, perlin))


def test_white_levels_are_the_uniform_table():
    # mix_noise computes the white levels (2k − 65535)/65536 instead of looking them up: the same float32 values.
    k = np.arange(nk.LEVELS)
    np.testing.assert_array_equal(((2 * k - 65535).astype(np.float32) * np.float32(2.0**-16)), nk.uniform_table())


def test_hash_noise_distributions():
    from scipy import stats

    g = np.empty(200_000, np.float32)
    nk.hash_fill(np.uint64(12345), nk.gaussian_table(), g)
    assert abs(g.mean()) < 0.01 and abs(g.std() - 1) < 0.01
    assert stats.kstest(g[:20000], "norm").pvalue > 1e-3
    u = np.empty(200_000, np.float32)
    nk.hash_fill(np.uint64(999), nk.uniform_table(), u)
    assert u.min() >= -1 and u.max() <= 1 and abs(u.mean()) < 0.01
    assert stats.kstest(u[:20000], "uniform", args=(-1, 2)).pvalue > 1e-3
    # Neighbouring elements are uncorrelated (lanes of one hash, and consecutive hashes).
    assert abs(np.corrcoef(g[:-1], g[1:])[0, 1]) < 0.01


@SETTINGS
@given(ratio=st.floats(0.02, 1.5), seed=st.integers(0, 1000))
def test_noise_scale_matches_bisection(ratio, seed):
    rng = np.random.default_rng(seed)
    clean = np.where(rng.random((4, 1, 12, 12)) < 0.3, rng.random((4, 1, 12, 12)), 0.0).astype(np.float32)
    noise = rng.standard_normal(clean.shape).astype(np.float32)
    s, achieved = nk.noise_scale(clean, noise, ratio)
    qc = ref.quantise_reference(clean, clean, 0.0).astype(int)
    measured = np.abs(ref.quantise_reference(clean, noise, s).astype(int) - qc).sum() / qc.sum()
    assert achieved == pytest.approx(measured, rel=1e-12)
    assert measured == pytest.approx(ratio, rel=0.011)
    s_ref = ref.noise_scale_reference(clean, noise, ratio)
    assert s == pytest.approx(s_ref, rel=0.05)  # a step function: any s in the 1 % band is a solution


@SETTINGS
@given(ratio=st.floats(0.0, 1.5), seed=st.integers(0, 1000), empty=st.booleans())
def test_noise_scale_quantise_matches_separate_passes(ratio, seed, empty):
    rng = np.random.default_rng(seed)
    clean = np.where(rng.random((4, 1, 12, 12)) < 0.3, rng.random((4, 1, 12, 12)), 0.0).astype(np.float32)
    clean *= not empty
    noise = rng.standard_normal(clean.shape).astype(np.float32)
    out = np.full(clean.shape, 7, np.uint8)
    fused = nk.noise_scale_quantise(clean, noise, ratio, out)
    s, achieved = nk.noise_scale(clean, noise, ratio)
    assert fused == (s, achieved)
    np.testing.assert_array_equal(out, ref.quantise_reference(clean, noise, s))


def test_noise_scale_of_empty_signal_is_zero():
    clean = np.zeros((2, 1, 8, 8), np.float32)
    assert nk.noise_scale(clean, np.ones_like(clean), 0.5) == (0.0, 0.0)


def test_quantise_matches_numpy():
    rng = np.random.default_rng(1)
    clean = rng.random((3, 1, 9, 9)).astype(np.float32)
    noise = rng.standard_normal(clean.shape).astype(np.float32)
    fast = np.empty(clean.shape, np.uint8)
    nk.quantise(clean, noise, 0.3, fast)
    np.testing.assert_array_equal(fast, ref.quantise_reference(clean, noise, 0.3))


def test_perlin_window_is_a_bilinear_crop():
    bank = np.random.default_rng(2).random((6, 30, 30)).astype(np.float32)
    out = np.empty((3, 1, 8, 9), np.float32)
    total = nk.perlin_window(bank, 2, 4.25, 3.5, 0.5, -0.75, False, False, out, 0)
    for t in range(3):
        y, x = np.mgrid[0:8, 0:9]
        px, py = 3.5 - 0.75 * t + x, 4.25 + 0.5 * t + y
        x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
        fx, fy = px - x0, py - y0
        sl = bank[2 + t]
        slow = ((1 - fx) * (1 - fy) * sl[y0, x0] + fx * (1 - fy) * sl[y0, x0 + 1] + (1 - fx) * fy * sl[y0 + 1, x0]
                + fx * fy * sl[y0 + 1, x0 + 1])
        np.testing.assert_allclose(out[t, 0], slow, atol=1e-6)
    assert total == pytest.approx(np.abs(out.astype(np.float64)).sum(), rel=1e-6)


@pytest.mark.parametrize("shape", [(5, 8, 12), (3, 7, 9)])
@pytest.mark.parametrize("flip_y", [False, True])
@pytest.mark.parametrize("flip_x", [False, True])
def test_perlin_window_matches_twin_and_mirrors(shape, flip_y, flip_x):
    bank = np.random.default_rng(4).standard_normal((12, 30, 30)).astype(np.float32)
    t, h, w = shape
    out = np.full((t, 2, h, w), 7.0, np.float32)
    total = nk.perlin_window(bank, 3, 5.3, 2.75, 0.6, -0.4, flip_y, flip_x, out, 1)
    assert (out[:, 0] == 7.0).all()  # only channel 1 is written
    np.testing.assert_array_equal(out[:, 1], ref.perlin_window_reference(bank, 3, 5.3, 2.75, 0.6, -0.4, flip_y, flip_x,
                                                                         shape))
    assert total == pytest.approx(np.abs(out[:, 1].astype(np.float64)).sum(), rel=1e-6)
    # A mirrored window is the plain window mirrored (up to the rounding of the shifted sample origin).
    plain = np.empty((t, 1, h, w), np.float32)
    nk.perlin_window(bank, 3, 5.3, 2.75, 0.6, -0.4, False, False, plain, 0)
    np.testing.assert_allclose(out[:, 1], plain[:, 0, ::-1 if flip_y else 1, ::-1 if flip_x else 1], atol=1e-5)


def test_oriented_bank_holds_the_transposed_slices():
    vol = np.random.default_rng(5).random((4, 6, 6)).astype(np.float32)
    both = nk.oriented_bank(vol)
    assert both.shape == (8, 6, 6) and both.flags.c_contiguous
    np.testing.assert_array_equal(both[:4], vol)
    np.testing.assert_array_equal(both[4:], vol.transpose(0, 2, 1))
    with pytest.raises(ValueError, match="square"):
        nk.oriented_bank(np.zeros((2, 4, 5), np.float32))


@SETTINGS
@given(boundary=st.sampled_from(["free", "bounce", "wrap"]), seed=st.integers(0, 10_000), frames=st.integers(2, 40))
def test_trajectories_match_numpy(boundary, seed, frames):
    from physvid.render import MOTION_FIELDS, trajectories

    rng = np.random.default_rng(seed)
    p = {name: rng.normal(0, 5, 4) for names in MOTION_FIELDS for name in names}
    p["x0"], p["y0"] = rng.uniform(0, 40, 4), rng.uniform(0, 30, 4)
    p["size"] = rng.uniform(4, 50, 4)  # includes objects larger than the frame (they stay centred under bounce)
    fast = trajectories(p, 4, frames, 30, 40, boundary)
    np.testing.assert_allclose(fast, ref.trajectories_reference(p, 4, frames, 30, 40, boundary), atol=1e-9)


def test_irregular_polygons_contain_their_centre():
    rng = np.random.default_rng(7)
    for n in range(3, 13):
        for _ in range(200):
            v = _polygon(rng.random(VERTEX_DRAWS), n, 10.0, True)
            a = np.sort(np.mod(np.arctan2(v[:, 1], v[:, 0]), 2 * np.pi))
            gaps = np.diff(np.concatenate([a, [a[0] + 2 * np.pi]]))
            assert gaps.max() < np.deg2rad(170.0 + 1e-9)


def test_noise_scale_quantise_on_odd_sizes_and_saturated_pixels():
    # Odd element count (the tail of the lane sums) and clean values at 0 and 1 (no free room one way).
    rng = np.random.default_rng(7)
    clean = rng.choice(np.array([0.0, 1.0, 0.5, 0.25], np.float32), size=(3, 1, 7, 9))
    noise = rng.standard_normal(clean.shape).astype(np.float32)
    out = np.zeros(clean.shape, np.uint8)
    s, achieved = nk.noise_scale_quantise(clean, noise, 0.4, out)
    np.testing.assert_array_equal(out, ref.quantise_reference(clean, noise, s))
    qc = ref.quantise_reference(clean, clean, 0.0).astype(int)
    measured = np.abs(out.astype(int) - qc).sum() / qc.sum()
    assert achieved == pytest.approx(measured, rel=1e-12) and measured == pytest.approx(0.4, rel=0.011)
    assert (s, achieved) == nk.noise_scale(clean, noise, 0.4)


def test_kernel_caches_are_dropped_when_any_source_changes(tmp_path):
    """numba checks a cached function only against its own file; the package drops the folder's caches on any change."""
    import os

    from physvid.kernels import refresh_caches

    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    (cache / "a.f-1.py311.nbi").write_bytes(b"index")
    assert refresh_caches(tmp_path)  # first sight: no stamp yet
    assert not (cache / "a.f-1.py311.nbi").exists()
    (cache / "a.f-1.py311.nbc").write_bytes(b"code")
    assert not refresh_caches(tmp_path)  # nothing changed: caches kept
    assert (cache / "a.f-1.py311.nbc").exists()
    st = (tmp_path / "b.py").stat()
    os.utime(tmp_path / "b.py", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # another file of the folder changed
    assert refresh_caches(tmp_path)
    assert not (cache / "a.f-1.py311.nbc").exists()
