"""Real-data loaders (paper §4) on the third-party files in ../shared/data and on synthetic arrays/frames written in tmp_path."""
from __future__ import annotations

import gzip
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from stmoe.data import ClipConfig, DataError, RadarConfig, load_clips, load_radar, load_sequences, make_clips, rate_to_unit, unit_to_rate
from stmoe.data.radar import parse_pgm, read_bom, read_fmi_pgm, read_knmi, read_mch_gif
from stmoe.data.real import _fit
from stmoe.metrics import hko_pixel_to_rain_rate


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


def read_image(path_or_file) -> np.ndarray:
    with Image.open(path_or_file) as img:
        return np.array(img)


def radar_files(shared: Path, sub: str, pattern: str) -> list[Path]:
    return sorted((shared / "radar" / sub).rglob(pattern))


# ------------------------------------------------------------------------------------------------------------- videos
@pytest.mark.parametrize("name,height,width", [("traffic-highway-video02.avi", 240, 320), ("street-bikes.mp4", 272, 640)])
def test_video_clips(shared_data, name, height, width):
    path = shared_data / "video" / name
    clips = load_clips(path, clip_length=4, stride=3, frame_step=2, max_frames=24)
    # 24 source frames, every 2nd -> 12 frames; windows of 4 every 3 -> starts 0, 3, 6 (9 would end at 13 > 12)
    assert clips.shape == (3, 4, 1, 64, 64) and clips.dtype == np.uint8
    assert clips.std() > 5  # real content, not a blank frame
    # twin: decode frame 2 directly with PyAV, grey it, shrink the short side to 64 (INTER_AREA), take the centre
    import av
    import cv2

    with av.open(str(path)) as c:
        raw = [f.to_ndarray(format="rgb24") for _, f in zip(range(3), c.decode(video=0))][2]
    assert raw.shape[:2] == (height, width)
    grey = cv2.cvtColor(raw, cv2.COLOR_RGB2GRAY)
    new_w = round(width * 64 / height)
    small = cv2.resize(grey, (new_w, 64), interpolation=cv2.INTER_AREA)
    x0 = (new_w - 64) // 2
    np.testing.assert_array_equal(clips[0, 1, 0], small[:, x0:x0 + 64])


def test_video_backends_agree(shared_data):
    path = shared_data / "video" / "traffic-highway-video02.avi"
    a = load_clips(path, clip_length=5, video_backend="av", max_frames=5)
    b = load_clips(path, clip_length=5, video_backend="ffmpeg", max_frames=5)
    assert np.abs(a.astype(int) - b).max() <= 2


def test_video_rgb_channels(shared_data):
    clips = load_clips(shared_data / "video" / "street-bikes.mp4", clip_length=2, stride=2, channels=3, size=(32, 48), max_frames=4)
    assert clips.shape == (2, 2, 3, 32, 48)
    assert np.abs(clips[:, :, 0].astype(int) - clips[:, :, 2]).max() > 0  # colour kept


# ------------------------------------------------------------------------------------------------------------- frames
def test_fish_frame_folder(shared_data):
    folder = shared_data / "texture" / "fish-frames"
    clips = load_clips(folder, clip_length=4, stride=4)
    assert clips.shape == (3, 4, 1, 64, 64)
    # 256 -> 64 is an exact 4x4 box average for INTER_AREA: compare with a NumPy block mean of the luma of frame 5
    import cv2

    rgb = read_image(folder / "frame_00000005.png")[:, :, :3]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)
    block = grey.reshape(64, 4, 64, 4).mean(axis=(1, 3))
    assert np.abs(clips[1, 1, 0].astype(float) - block).max() <= 1.0


def write_png(path: Path, rgb) -> None:
    Image.fromarray(np.full((8, 8, 3), rgb, dtype=np.uint8)).save(path)


def test_natural_order_and_colour(tmp_path):
    for i, value in [(1, 10), (2, 20), (10, 100)]:
        write_png(tmp_path / f"frame_{i}.png", (value, value, value))
    write_png(tmp_path / "frame_3.png", (255, 0, 0))
    grey = load_clips(tmp_path, clip_length=None, size=8)
    assert grey[0, :, 0, 0, 0].tolist() == [10, 20, round(0.299 * 255), 100]  # frame_10 last; red -> Rec. 601 luma
    rgb = load_clips(tmp_path, clip_length=None, size=8, channels=3)
    assert rgb[0, 2, :, 0, 0].tolist() == [255, 0, 0]


def test_folder_of_sequence_folders(tmp_path):
    for s in range(2):
        (tmp_path / f"seq{s}").mkdir()
        for i in range(5):
            write_png(tmp_path / f"seq{s}" / f"{i}.png", (10 * s + i,) * 3)
    clips = load_clips(tmp_path, clip_length=3, stride=2, size=8)
    assert clips.shape == (4, 3, 1, 8, 8)  # 2 sequences x starts (0, 2)
    assert clips[:, :, 0, 0, 0].tolist() == [[0, 1, 2], [2, 3, 4], [10, 11, 12], [12, 13, 14]]


def test_fit_centre_crops_after_scaling():
    img = np.full((64, 128, 1), 100, dtype=np.uint8)
    img[:, :32] = 255
    img[:, 96:] = 0
    out = _fit(img, (32, 32), allow_upscale=False, what="test")
    assert out.shape == (32, 32, 1) and np.all(out == 100)  # side bands cropped away


# ------------------------------------------------------------------------------------------------------------- arrays
def sequences_array(n: int, t: int, c: int | None = None, h: int = 16, w: int = 16) -> np.ndarray:
    """Each frame holds the value 10 * sequence + frame, so positions are checkable after any transpose."""
    base = (10 * np.arange(n)[:, None] + np.arange(t)[None, :]).astype(np.uint8)  # (n, t)
    shape = (n, t) + ((c,) if c else ()) + (h, w)
    return np.broadcast_to(base.reshape((n, t) + (1,) * (len(shape) - 2)), shape).copy()


def test_array_layouts(tmp_path):
    ntwh = sequences_array(6, 5)
    np.save(tmp_path / "nthw.npy", ntwh)
    ntchw = sequences_array(3, 6, c=3)
    np.save(tmp_path / "ntchw.npy", ntchw)
    mmnist = np.ascontiguousarray(sequences_array(12, 8).transpose(1, 0, 2, 3))  # (T=8, N=12, H, W) like mnist_test_seq.npy
    np.savez(tmp_path / "mmnist.npz", data=mmnist)

    with pytest.raises(DataError, match=r"may be \(T, N, H, W\) or \(N, T, H, W\); pass layout"):
        load_clips(tmp_path / "nthw.npy", clip_length=None, size=16)  # a 4-D array is never guessed
    a = load_clips(tmp_path / "nthw.npy", clip_length=None, size=16, layout="NTHW")
    assert a.shape == (6, 5, 1, 16, 16)
    np.testing.assert_array_equal(a[:, :, 0], ntwh)
    b = load_clips(tmp_path / "ntchw.npy", clip_length=4, stride=2, size=16, channels=3)
    assert b.shape == (3 * 2, 4, 3, 16, 16)
    np.testing.assert_array_equal(b[1], ntchw[0, 2:6])
    c = load_clips(tmp_path / "mmnist.npz", clip_length=8, size=16, layout="TNHW")
    assert c.shape == (12, 8, 1, 16, 16)
    assert c[:, :, 0, 0, 0].tolist() == sequences_array(12, 8)[:, :, 0, 0].tolist()
    d = load_clips(tmp_path / "mmnist.npz", clip_length=4, size=8, frame_step=2, layout="TNHW")  # downscale + step
    assert d.shape == (12, 4, 1, 8, 8) and d[3, :, 0, 0, 0].tolist() == [30, 32, 34, 36]
    # N < T in (N, T, H, W) is ambiguous for the heuristic: layout= fixes it
    few = sequences_array(2, 6)
    np.save(tmp_path / "few.npy", few)
    e = load_clips(tmp_path / "few.npy", clip_length=None, size=16, layout="NTHW")
    np.testing.assert_array_equal(e[:, :, 0], few)


def test_float_arrays_are_scaled(tmp_path):
    arr = np.linspace(0, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4).astype(np.float32)
    np.save(tmp_path / "f.npy", arr)
    out = load_clips(tmp_path / "f.npy", clip_length=None, size=4, layout="NTHW")
    np.testing.assert_array_equal(out[:, :, 0], np.rint(arr.astype(np.float64) * 255).astype(np.uint8))


# -------------------------------------------------------------------------------------------------------------- radar
def test_bom_reader_by_hand(shared_data):
    path = radar_files(shared_data, "bom", "*.nc")[20]
    frame = read_bom(path)
    with h5py.File(path, "r") as f:
        raw = f["precipitation"][...]
        minutes = (int(f["valid_time"][()]) - int(f["start_time"][()])) / 60
    assert minutes == 10
    y, x = np.unravel_index(np.argmax(raw), raw.shape)
    assert frame.rate[y, x] == pytest.approx(raw[y, x] * 0.05 * 6, rel=1e-6)  # 10-minute accumulation in mm -> mm/h
    assert frame.valid.shape == (512, 512) and frame.rate.min() >= 0


def test_fmi_reader_matches_pil_and_formula(shared_data):
    path = radar_files(shared_data, "fmi", "*.pgm.gz")[10]
    with gzip.open(path) as fh:
        data = fh.read()
    raw = parse_pgm(data)
    with gzip.open(path) as fh:
        np.testing.assert_array_equal(raw, read_image(fh))
    frame = read_fmi_pgm(path)
    assert raw.shape == (1226, 760)
    np.testing.assert_array_equal(frame.valid, raw != 255)
    y, x = np.unravel_index(np.argmax(np.where(raw == 255, 0, raw)), raw.shape)
    dbz = (raw[y, x] - 64) / 2
    assert frame.rate[y, x] == pytest.approx((10 ** (dbz / 10) / 223) ** (1 / 1.53), rel=1e-5)


def test_mch_reader_formula(shared_data):
    path = radar_files(shared_data, "mch", "*.gif")[20]
    idx = read_image(path)
    frame = read_mch_gif(path)
    np.testing.assert_array_equal(frame.valid, idx != 255)
    i = int(idx.max(where=idx < 250, initial=0))
    y, x = np.argwhere(idx == i)[0]
    assert frame.rate[y, x] == pytest.approx(12 * (10 ** ((i - 71.5) / 20) / 316) ** (1 / 1.5), rel=1e-5)
    assert frame.period_minutes == 5


def test_knmi_reader_by_hand(shared_data):
    path = radar_files(shared_data, "KNMI", "*.h5")[20]
    frame = read_knmi(path)
    with h5py.File(path, "r") as f:
        raw = f["image1/image_data"][...]
    np.testing.assert_array_equal(frame.valid, raw != 65535)
    np.testing.assert_allclose(frame.rate, np.where(raw == 65535, 0, raw * 0.01 * 12), rtol=1e-6)


@pytest.mark.parametrize("sub,pattern,fmt", [("mch", "*.gif", "mch"), ("KNMI", "*.h5", "knmi")])
def test_radar_readers_match_pysteps(shared_data, sub, pattern, fmt):
    importers = pytest.importorskip("pysteps.io.importers", reason="pysteps is an optional cross-check")
    path = radar_files(shared_data, sub, pattern)[15]
    if fmt == "mch":
        ref, _, meta = importers.import_mch_gif(str(path), product="AQC", unit="mm", accutime=5.0)
        frame = read_mch_gif(path)
    else:
        ref, _, meta = importers.import_knmi_hdf5(str(path))
        frame = read_knmi(path)
    assert meta["unit"] == "mm" and meta["accutime"] == 5.0  # pysteps gives 5-minute accumulations; we give mm/h
    np.testing.assert_array_equal(frame.valid, ~np.isnan(ref))
    np.testing.assert_allclose(frame.rate, np.nan_to_num(ref, nan=0.0) * 12, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sub,pattern,native", [("bom", "*.nc", 10), ("fmi", "*.pgm.gz", 5), ("mch", "*.gif", 5), ("KNMI", "*.h5", 5)])
def test_radar_event_clips(shared_data, sub, pattern, native):
    files = radar_files(shared_data, sub, pattern)[:6]
    seq = load_radar(files, size=64)
    assert seq.frames.shape == (6, 1, 64, 64) and seq.frames.dtype == np.uint8 and seq.valid.dtype == bool
    assert seq.period_minutes == native and seq.files == tuple(files)
    assert seq.frames.max() > 0  # these events contain rain
    clips = load_clips(files, kind="radar", clip_length=3, stride=3)
    np.testing.assert_array_equal(clips.reshape(6, 1, 64, 64), seq.frames)


def test_radar_folder_cadence_and_region(shared_data):
    folder = shared_data / "radar" / "fmi"
    every_other = load_radar(folder, radar=RadarConfig(cadence_minutes=10), max_frames=8)
    assert every_other.frame_step == 2 and len(every_other.files) == 4
    assert [p.name[:12] for p in every_other.files] == ["201609281500", "201609281510", "201609281520", "201609281530"]
    region = RadarConfig(region=(600, 728, 300, 428))
    seq = load_radar(every_other.files[:1], radar=region, size=64)
    rate = read_fmi_pgm(every_other.files[0]).rate[600:728, 300:428].astype(np.float64)
    expected = rate.reshape(64, 2, 64, 2).mean(axis=(1, 3))  # INTER_AREA halving = 2x2 mean of the rain rate
    p = seq.frames[0, 0] / 255.0
    approx = rate_to_unit(expected, region)
    assert np.abs(p - approx).max() <= 0.5 / 255 + 1e-6
    with pytest.raises(DataError) as e:
        load_radar(every_other.files[:1], radar=RadarConfig(region=(0, 2000, 0, 10)))
    assert "outside" in one_line_error(e)


def test_rain_transform_round_trip():
    cfg = RadarConfig()
    rates = np.array([0.5, 2.0, 10.0, 50.0])
    np.testing.assert_allclose(unit_to_rate(rate_to_unit(rates, cfg), cfg), rates, rtol=1e-10)
    np.testing.assert_allclose(hko_pixel_to_rain_rate(rate_to_unit(rates, cfg)), rates, rtol=1e-10)  # B-MSE's mapping inverts it
    assert rate_to_unit(np.array([0.0]), cfg)[0] == 0.0
    lin = RadarConfig(transform="linear", max_rate=50.0)
    np.testing.assert_allclose(rate_to_unit(np.array([0.0, 25.0, 80.0]), lin), [0.0, 0.5, 1.0])
    assert math.isclose(float(rate_to_unit(np.array([1.0]), cfg)[0]), (10 * math.log10(58.53) + 10) / 70)


# ------------------------------------------------------------------------------------------------------------- errors
def test_errors_are_one_clear_line(tmp_path, shared_data):
    with pytest.raises(DataError) as e:
        load_clips(tmp_path / "nope.mp4", clip_length=4)
    assert "does not exist" in one_line_error(e)

    (tmp_path / "broken.mp4").write_bytes(b"this is not a video" * 10)
    with pytest.raises(DataError) as e:
        load_clips(tmp_path / "broken.mp4", clip_length=4)
    assert "cannot decode video" in one_line_error(e)

    (tmp_path / "thing.xyz").write_bytes(b"?")
    with pytest.raises(DataError) as e:
        load_clips(tmp_path / "thing.xyz", clip_length=4)
    assert "unknown format" in one_line_error(e) and "kind=" in str(e.value)

    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError) as e:
        load_clips(tmp_path / "bad.h5", clip_length=4)
    assert "cannot read" in one_line_error(e)

    with pytest.raises(DataError) as e:
        load_clips(shared_data / "texture" / "fish-frames", clip_length=4, size=512)
    assert "smaller than the crop 512x512" in one_line_error(e)

    with pytest.raises(DataError) as e:
        load_clips(shared_data / "texture" / "fish-frames", clip_length=50)
    assert "clip_length 50 is longer than the 12 frames" in one_line_error(e)

    np.save(tmp_path / "hot.npy", np.full((2, 3, 4, 4), 2.0))
    with pytest.raises(DataError) as e:
        load_clips(tmp_path / "hot.npy", clip_length=2, size=4, layout="NTHW")
    assert "[0, 1]" in one_line_error(e)

    np.savez(tmp_path / "two.npz", a=np.zeros((2, 3, 4, 4), np.uint8), b=np.zeros((2, 3, 4, 4), np.uint8))
    with pytest.raises(DataError) as e:
        load_clips(tmp_path / "two.npz", clip_length=2, size=4)
    assert "array_key" in one_line_error(e)

    with pytest.raises(DataError) as e:
        ClipConfig(channels=2)
    assert "channels must be 1" in one_line_error(e)
    with pytest.raises(DataError) as e:
        load_clips(tmp_path, clip_length=2, kind="movie")
    assert "kind must be one of" in one_line_error(e)


def test_make_clips_skips_short_sequences_with_a_warning():
    seqs = [np.zeros((5, 1, 2, 2), np.uint8), np.zeros((2, 1, 2, 2), np.uint8)]
    with pytest.warns(UserWarning, match="1 of 2 sequences"):
        clips = make_clips(seqs, 3, stride=1)
    assert clips.shape == (3, 3, 1, 2, 2)
    with pytest.raises(DataError, match="lengths"):
        make_clips(seqs, None)


def test_sequences_keep_their_lengths(tmp_path):
    np.save(tmp_path / "a.npy", sequences_array(6, 5))
    seqs = load_sequences(tmp_path / "a.npy", ClipConfig(size=16, frame_step=2, layout="NTHW"))
    assert len(seqs) == 6 and all(s.shape == (3, 1, 16, 16) for s in seqs)
