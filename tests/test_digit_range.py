"""`shape.digit_range` (`--digit-range FIRST:STOP`): train and test sets of Dynamic MNIST that share no digit image."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import physvid
from physvid.errors import ConfigError, DigitsError

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"


def write_idx3(path: Path, images: np.ndarray) -> Path:
    n, rows, cols = images.shape
    header = b"".join(int(v).to_bytes(4, "big") for v in (0x803, n, rows, cols))
    path.write_bytes(header + images.astype(np.uint8).tobytes())
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """40 random 28x28 'digits' (a blob each), so the test needs no third-party data."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]
    imgs = np.stack([255 * (np.hypot(yy - rng.uniform(9, 19), xx - rng.uniform(9, 19)) < rng.uniform(4, 9))
                     for _ in range(40)])
    return write_idx3(tmp_path_factory.mktemp("digits") / "blobs-idx3-ubyte", imgs)


def config(path: Path, digit_range=None) -> physvid.RenderConfig:
    return physvid.RenderConfig.from_dict({"property": "dynamic-mnist", "height": 32, "width": 32, "frames": 4, "seed": 5,
                                           "shape": {"digits": str(path), "digit_range": digit_range,
                                                     "size": [10.0, 14.0]}})


def test_a_digit_range_renders_exactly_the_subset_file(digits, tmp_path):
    """Rendering with digit_range (a, b) is byte-identical to rendering from a file holding only images a..b-1, and
    params['digit'] counts from a (the absolute image is a + digit)."""
    from physvid.digits import read_idx_images

    subset = write_idx3(tmp_path / "subset-idx3-ubyte", read_idx_images(digits)[30:40])
    v1, p1 = physvid.render(config(digits, (30, 40)), range(12))
    v2, p2 = physvid.render(config(subset), range(12))
    assert v1.tobytes() == v2.tobytes()
    np.testing.assert_array_equal(p1["digit"], p2["digit"])
    assert p1["digit"].max() < 10
    v3, _ = physvid.render(config(digits, (0, 30)), range(12))
    assert v3.tobytes() != v1.tobytes()


def test_train_and_test_ranges_share_no_digit(digits):
    _, train = physvid.render(config(digits, (0, 30)), range(40))
    _, test = physvid.render(config(digits, (30, 40)), range(20))
    assert set(np.unique(train["digit"])).isdisjoint(set(np.unique(test["digit"]) + 30))


@pytest.mark.parametrize("rng, kind", [((5, 5), ConfigError), ((9, 3), ConfigError), ((-1, 4), ConfigError),
                                       ((30, 41), DigitsError)])
def test_bad_digit_ranges_are_one_line_errors(digits, rng, kind):
    with pytest.raises(kind) as err:
        physvid.render(config(digits, rng), range(1))
    assert "digit_range" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(not MNIST.is_file(), reason="needs ../shared/data/mnist/t10k-images-idx3-ubyte.gz (MNIST test set)")
def test_cli_digit_range_on_mnist(tmp_path):
    from click.testing import CliRunner

    from physvid_cli.physvid_cmd import cli

    res = CliRunner().invoke(cli, ["generate", "-p", "dynamic-mnist", "--n", "4", "--size", "32", "--frames", "4",
                                   "--digits", str(MNIST), "--digit-range", "9000:10000", "--out",
                                   str(tmp_path / "d"), "--quiet"])
    assert res.exit_code == 0, res.output
    ds = physvid.open_dataset(tmp_path / "d")
    assert ds.manifest["config"]["shape"]["digit_range"] == [9000, 10000]
    assert int(np.asarray(ds.params["digit"]).max()) < 1000
