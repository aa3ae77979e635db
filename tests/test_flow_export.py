"""Flow exports read back with the readers flow code uses (OpenCV's readOpticalFlow, KITTI's PNG decoding), the CLI,
and the preview's colour coding against the reference port of the Middlebury colour wheel (flow_vis)."""
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import physvid as pv
from physvid.preview import flow_to_rgb
from physvid_cli.physvid_cmd import cli

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def flow_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow") / "d"
    pv.generate(pv.RenderConfig(property="mixed", frames=3, height=32, width=40, flow=True), 3, out, workers=1)
    return out


def test_flo_layout_reads_back_with_opencv(flow_data, tmp_path):
    res = CliRunner().invoke(cli, ["export", str(flow_data), "--format", "flo", "--out", str(tmp_path / "c"),
                                   "--val-fraction", "0.3"])
    assert res.exit_code == 0, res.output
    ds = pv.open_dataset(flow_data)
    split = (tmp_path / "c" / "FlyingChairs_train_val.txt").read_text().split()
    assert split == ["1"] * 4 + ["2"] * 2  # 3 sequences x 2 pairs; the last sequence is validation
    for pair in range(6):
        i, t = divmod(pair, 2)
        folder = tmp_path / "c" / ("val" if split[pair] == "2" else "train")
        g = ds.get(i)
        for name, key in (("flow_01", "flow_forward"), ("flow_10", "flow_backward")):
            flo = cv2.readOpticalFlow(str(folder / f"{pair:07d}-{name}.flo"))  # (H, W, 2)
            np.testing.assert_array_equal(flo, np.moveaxis(g[key][t], 0, -1))
        img = np.asarray(Image.open(folder / f"{pair:07d}-img_1.png"))
        np.testing.assert_array_equal(img[..., 0], g["video"][t + 1, 0])
        occ = np.asarray(Image.open(folder / f"{pair:07d}-occ_01.png"))
        np.testing.assert_array_equal(occ, g["occlusion_forward"][t] * 255)
        mb = np.asarray(Image.open(folder / f"{pair:07d}-mb_10.png"))
        np.testing.assert_array_equal(mb, g["motion_boundary_backward"][t] * 255)
    assert (tmp_path / "c" / "pairs.txt").read_text().splitlines()[6] == "5 val 2 1"


def test_kitti_png_decodes_as_the_devkit_does(flow_data, tmp_path):
    res = CliRunner().invoke(cli, ["export", str(flow_data), "--format", "kitti", "--out", str(tmp_path / "k")])
    assert res.exit_code == 0, res.output
    ds = pv.open_dataset(flow_data)
    for pair in range(6):
        i, t = divmod(pair, 2)
        g = ds.get(i)
        for folder, valid_want in (("flow_occ", np.ones((32, 40), bool)), ("flow_noc", g["occlusion_forward"][t] == 0)):
            png = cv2.imread(str(tmp_path / "k" / folder / f"{pair:06d}_10.png"), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
            assert png.dtype == np.uint16
            # KITTI devkit (flow_read in Python ports): u = (R - 2^15) / 64, v = (G - 2^15) / 64, valid = B
            u = (png[..., 2].astype(np.float64) - 2 ** 15) / 64.0
            v = (png[..., 1].astype(np.float64) - 2 ** 15) / 64.0
            np.testing.assert_array_equal(png[..., 0] > 0, valid_want)
            np.testing.assert_allclose(u, g["flow_forward"][t][0], atol=1 / 128 + 1e-6)
            np.testing.assert_allclose(v, g["flow_forward"][t][1], atol=1 / 128 + 1e-6)


def test_flow_exports_and_preview_refuse_data_without_flow(tmp_path):
    pv.generate(pv.RenderConfig(property="rotation", frames=3, height=16, width=16), 2, tmp_path / "plain", workers=1)
    for args in (["export", str(tmp_path / "plain"), "--format", "flo"],
                 ["preview", str(tmp_path / "plain"), "--out", str(tmp_path / "p.png"), "--flow"]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2 and "stores no flow; regenerate it with --flow" in res.output
        assert "Traceback" not in res.output
    assert not (tmp_path / "plain-flo").exists() and not (tmp_path / "p.png").exists()


def test_preview_draws_the_flow_with_the_standard_colour_wheel(flow_data, tmp_path):
    flow_vis = pytest.importorskip("flow_vis")
    rng = np.random.default_rng(0)
    f = rng.normal(0, 3, (2, 20, 30)).astype(np.float32)
    np.testing.assert_array_equal(flow_to_rgb(f), flow_vis.flow_to_color(np.moveaxis(f, 0, -1)))
    res = CliRunner().invoke(cli, ["preview", str(flow_data), "--out", str(tmp_path / "p.png"), "--flow", "-i", "0",
                                   "--scale", "1"])
    assert res.exit_code == 0, res.output
    img = np.asarray(Image.open(tmp_path / "p.png"))
    assert img.shape == (2 * 32 + 2, 3 * 40 + 2 * 2, 3)  # frames, then the flow row
