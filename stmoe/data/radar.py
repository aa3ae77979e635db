"""Readers for the precipitation radar composites of paper §4.4 (four public formats), returning rain rate in mm/h.

Each reader decodes one file into a `RadarFrame`: rain rate R (mm/h, float32, rows north-up as stored), a validity mask (False where
the product has no data or lies outside the radar coverage) and the product's accumulation period in minutes. The decoding rules are
the ones documented by the data producers and followed by pysteps' importers; see docs/real-data.md for every formula.

- BoM Rainfields3 "prcp-c10" netCDF4 (read with h5py): int16 `precipitation` x scale_factor + add_offset = accumulation (mm) over
  valid_time - start_time; R = accumulation * 60 / minutes. `_FillValue` -> no data.
- FMI PGM(.gz): 8-bit reflectivity, dBZ = (v - 64) / 2, v = 255 (the PGM maxval) -> no data; R = (10^(dBZ/10) / 223)^(1/1.53)
  (FMI's Z-R relation).
- MeteoSwiss AQC/CPC palette GIF: palette index i -> accumulation (mm per ACCUm minutes, default 5) = (10^((i - 71.5)/20) / 316)^(1/1.5);
  i < 2 and 251..254 -> 0, i = 255 -> no data; R = accumulation * 60 / minutes.
- KNMI HDF5 (`image1/image_data`): value = gain * PV + offset from the `calibration_formulas` attribute ("GEO=0.01*PV+0.0"),
  `calibration_missing_data` / `calibration_out_of_image` -> no data; accumulation products (mm over the product's time span) -> R as
  above, reflectivity products (dBZ) -> R = (10^(dBZ/10) / 200)^(1/1.6).
"""
from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = [
    "RadarFrame", "RADAR_FORMATS", "radar_format_of", "read_radar_frame",
    "read_bom", "read_fmi_pgm", "read_mch_gif", "read_knmi", "parse_pgm",
]

RADAR_FORMATS = ("bom", "fmi", "mch", "knmi")

FMI_ZR = (223.0, 1.53)  # FMI's Z = a R^b
KNMI_ZR = (200.0, 1.6)  # Marshall-Palmer, KNMI's reflectivity products
MCH_ZR = (316.0, 1.5)  # MeteoSwiss


@dataclass(frozen=True)
class RadarFrame:
    rate: np.ndarray  # (H, W) float32 rain rate in mm/h; 0 where invalid
    valid: np.ndarray  # (H, W) bool
    period_minutes: float  # accumulation period / native time step of the product


def radar_format_of(path: Path) -> str | None:
    """Format from the file name: .nc -> bom, .pgm[.gz] -> fmi, .gif -> mch, .h5/.hdf5 -> knmi; None for anything else."""
    name = path.name.lower()
    if name.endswith(".nc"):
        return "bom"
    if name.endswith(".pgm") or name.endswith(".pgm.gz"):
        return "fmi"
    if name.endswith(".gif"):
        return "mch"
    if name.endswith(".h5") or name.endswith(".hdf5"):
        return "knmi"
    return None


def read_radar_frame(path: str | Path, fmt: str = "auto") -> RadarFrame:
    """Decode one radar file; fmt in ("auto",) + RADAR_FORMATS."""
    path = Path(path)
    if fmt == "auto":
        fmt = radar_format_of(path) or ""
        if not fmt:
            raise DataError(f"cannot tell the radar format of {path}: expected .nc (bom), .pgm[.gz] (fmi), .gif (mch) or .h5 (knmi)")
    readers = {"bom": read_bom, "fmi": read_fmi_pgm, "mch": read_mch_gif, "knmi": read_knmi}
    if fmt not in readers:
        raise DataError(f"radar format must be one of {('auto',) + RADAR_FORMATS}, got {fmt!r}")
    if not path.is_file():
        raise DataError(f"radar file {path} does not exist")
    try:
        return readers[fmt](path)
    except DataError:
        raise
    except (OSError, KeyError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {path} as a {fmt} radar file: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _zr_rate(dbz: np.ndarray, a: float, b: float) -> np.ndarray:
    """Z = a R^b with Z = 10^(dBZ/10) -> R (mm/h)."""
    return (10.0 ** (dbz / 10.0) / a) ** (1.0 / b)


def _attr(obj, name: str, default=None):
    v = obj.attrs.get(name, default)
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.reshape(()).item()
    if isinstance(v, (bytes, np.bytes_)):
        v = v.decode("ascii", "replace")
    return v


def read_bom(path: Path) -> RadarFrame:
    """BoM Rainfields3 prcp-c10 netCDF4 (an HDF5 file) -> RadarFrame."""
    import h5py

    with h5py.File(path, "r") as f:
        if "precipitation" not in f:
            raise DataError(f"{path} has no 'precipitation' variable; only BoM Rainfields3 prcp products are supported")
        var = f["precipitation"]
        raw = var[...]
        scale = float(_attr(var, "scale_factor", 1.0))
        offset = float(_attr(var, "add_offset", 0.0))
        fill = _attr(var, "_FillValue", None)
        units = str(_attr(var, "units", "mm")).strip()
        minutes = 10.0
        if "valid_time" in f and "start_time" in f:
            seconds = float(f["valid_time"][()]) - float(f["start_time"][()])
            if seconds > 0:
                minutes = seconds / 60.0
        north_up = True
        if "y" in f and f["y"].shape[0] > 1:
            y = f["y"][...]
            north_up = bool(y[0] > y[-1])  # projection y grows northwards; row 0 must be the northernmost
    valid = np.ones(raw.shape, dtype=bool) if fill is None else raw != fill
    value = raw.astype(np.float64) * scale + offset
    if units in ("kg m-2", "mm"):  # accumulation over the period
        rate = value * 60.0 / minutes
    elif units in ("mm h-1", "mm/h", "kg m-2 h-1"):
        rate = value
    else:
        raise DataError(f"{path}: unsupported precipitation units {units!r} (expected 'kg m-2', 'mm' or 'mm h-1')")
    rate = np.where(valid & (rate > 0), rate, 0.0)
    if not north_up:
        rate, valid = rate[::-1], valid[::-1]
    return RadarFrame(np.ascontiguousarray(rate, dtype=np.float32), np.ascontiguousarray(valid), minutes)


def parse_pgm(data: bytes) -> np.ndarray:
    """Binary (P5) PGM bytes -> (H, W) uint8/uint16 array; comments (#...) in the header are skipped."""
    pos = 0
    tokens: list[bytes] = []
    while len(tokens) < 4:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if pos >= len(data):
            raise DataError("truncated PGM header")
        if data[pos:pos + 1] == b"#":
            end = data.find(b"\n", pos)
            pos = len(data) if end < 0 else end + 1
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        tokens.append(data[start:pos])
    if tokens[0] != b"P5":
        raise DataError(f"not a binary PGM file (magic {tokens[0][:8]!r}, expected b'P5')")
    width, height, maxval = (int(t) for t in tokens[1:])
    pos += 1  # exactly one whitespace byte separates maxval from the raster
    dtype = np.dtype(np.uint8) if maxval < 256 else np.dtype(">u2")
    n = width * height * dtype.itemsize
    if len(data) - pos < n:
        raise DataError(f"truncated PGM raster: {len(data) - pos} bytes for {width}x{height}")
    return np.frombuffer(data, dtype=dtype, count=width * height, offset=pos).reshape(height, width)


def read_fmi_pgm(path: Path) -> RadarFrame:
    """FMI reflectivity composite, PGM or gzipped PGM -> RadarFrame (5-minute product)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    raw = parse_pgm(data)
    valid = raw != 255
    dbz = (raw.astype(np.float64) - 64.0) / 2.0
    rate = np.where(valid, _zr_rate(dbz, *FMI_ZR), 0.0)
    return RadarFrame(rate.astype(np.float32), valid, 5.0)


def _mch_aqc_lut() -> np.ndarray:
    """Palette index -> accumulation (mm per period) of MeteoSwiss AQC/CPC GIFs; NaN = no data."""
    i = np.arange(256, dtype=np.float64)
    lut = (10.0 ** ((i - 71.5) / 20.0) / MCH_ZR[0]) ** (1.0 / MCH_ZR[1])
    lut[(i < 2) | ((i > 250) & (i < 255))] = 0.0
    lut[255] = np.nan
    return lut


def read_mch_gif(path: Path) -> RadarFrame:
    """MeteoSwiss AQC/CPC palette GIF -> RadarFrame; the accumulation period is read from the GIF comment (ACCUm=...)."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode != "P":
            raise DataError(f"{path} is not a palette GIF (mode {img.mode}); expected a MeteoSwiss AQC/CPC composite")
        comment = img.info.get("comment", b"")
        idx = np.array(img)
    comment = comment.decode("ascii", "replace") if isinstance(comment, bytes) else str(comment)
    product = path.name[:3].upper()
    m = re.search(r"PRDT=([A-Z]{3})", comment)
    if m:
        product = m.group(1)
    if product not in ("AQC", "CPC"):
        raise DataError(
            f"{path}: MeteoSwiss product {product!r} is not supported (only AQC and CPC, whose palette index encodes the value)"
        )
    m = re.search(r"ACCUm=(\d+)", comment)
    minutes = float(m.group(1)) if m and int(m.group(1)) > 0 else 5.0
    acc = _mch_aqc_lut()[idx]
    valid = ~np.isnan(acc)
    rate = np.where(valid, acc, 0.0) * 60.0 / minutes
    return RadarFrame(rate.astype(np.float32), valid, minutes)


def _knmi_time(s: str) -> datetime | None:
    try:
        return datetime.strptime(s.strip().split(".")[0], "%d-%b-%Y;%H:%M:%S")
    except ValueError:
        return None


def read_knmi(path: Path) -> RadarFrame:
    """KNMI radar composite HDF5 (image1/image_data with its calibration group) -> RadarFrame."""
    import h5py

    with h5py.File(path, "r") as f:
        if "image1/image_data" not in f:
            raise DataError(
                f"{path} is not a KNMI radar composite (no image1/image_data); physvid datasets are read by physvid, ODIM files are not supported"
            )
        raw = f["image1/image_data"][...]
        cal = f["image1/calibration"] if "image1/calibration" in f else None
        formula = str(_attr(cal, "calibration_formulas", "")) if cal is not None else ""
        missing = {int(_attr(cal, k)) for k in ("calibration_missing_data", "calibration_out_of_image")
                   if cal is not None and _attr(cal, k) is not None}
        parameter = str(_attr(f["image1"], "image_geo_parameter", "ACCUMULATED_PRECIPITATION_[MM]")).upper()
        minutes = 5.0
        if "overview" in f:
            t0 = _knmi_time(str(_attr(f["overview"], "product_datetime_start", "")))
            t1 = _knmi_time(str(_attr(f["overview"], "product_datetime_end", "")))
            if t0 and t1 and t1 > t0:
                minutes = (t1 - t0).total_seconds() / 60.0
    m = re.fullmatch(r"\s*GEO\s*=\s*([-+0-9.eE]+)\s*\*\s*PV\s*([-+])\s*([0-9.eE]+)\s*", formula)
    if not m:
        raise DataError(f"{path}: cannot parse the KNMI calibration formula {formula!r} (expected 'GEO=<gain>*PV+<offset>')")
    gain = float(m.group(1))
    offset = float(m.group(3)) * (-1.0 if m.group(2) == "-" else 1.0)
    valid = ~np.isin(raw, list(missing)) if missing else np.ones(raw.shape, dtype=bool)
    value = raw.astype(np.float64) * gain + offset
    if "PRECIPITATION" in parameter and "[MM]" in parameter:
        rate = value * 60.0 / minutes
    elif "REFLECTIVITY" in parameter or "DBZ" in parameter:
        rate = _zr_rate(value, *KNMI_ZR)
    else:
        raise DataError(f"{path}: unsupported KNMI quantity {parameter!r} (expected accumulated precipitation [MM] or reflectivity [DBZ])")
    rate = np.where(valid & (rate > 0), rate, 0.0)
    return RadarFrame(rate.astype(np.float32), valid, minutes)
