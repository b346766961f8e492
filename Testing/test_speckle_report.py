"""``scripts/speckle_report.py`` and its helpers ``real_scans.py`` and ``bone_proxy.py``: speckle count, bright-bone
proxy, qim3d volumes read out of the wheel, QC montage, and the one-command report (JSON, montages, no overwrite)."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fossilsegment_engine.io.overlay import TRUTH_COLOR
from fossilsegment_engine.volume import Volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bone_proxy  # noqa: E402
import real_scans  # noqa: E402
import speckle_report as speckle  # noqa: E402

CLASSES = [{"value": 0, "name": "Background", "color": [0, 0, 0]}, {"value": 1, "name": "Bone", "color": [1, 1, 1]}]


def test_small_pieces_per_slice_and_figure() -> None:
    labels = np.zeros((2, 64, 64), np.uint8)
    labels[0, 5:10, 5:10] = 1  # 25 px: a speck
    labels[0, 20:30, 20:30] = 1  # 100 px: kept
    labels[1, 40, 40] = labels[1, 41, 41] = 1  # diagonal neighbours: one 2-px piece (8-connected)
    labels[1, 50:56, 50:55] = 1  # 30 px: not below the limit
    count, mask = speckle.small_pieces(labels, 30)
    assert count == 2
    assert mask.sum() == 25 + 2 and not mask[0, 25, 25]
    fig = speckle.speckle_figure(labels, 30)
    assert fig["pieces"] == 2
    assert np.isclose(fig["per_million_matrix"], 2e6 / int((labels == 0).sum()))


def _ring_slice(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A noisy matrix (s.d. 10) on a gradient, a thin bright ring, bright single pixels and constant fill corners."""
    yy, xx = np.mgrid[:200, :300]
    image = 1000 + 0.2 * xx + rng.normal(0, 10, (200, 300))
    radius = np.hypot(yy - 100, xx - 150)
    ring = (radius >= 40) & (radius < 42)
    image[ring] += 80
    dots = np.zeros(image.shape, bool)
    dots[rng.integers(10, 190, 40), rng.integers(10, 290, 40)] = True
    dots &= radius > 50
    image[dots] += 100
    fill = np.hypot(yy - 100, xx - 150) > 140  # outside the "scanner circle": one constant, bright value
    image[fill] = 1200
    return image.astype(np.uint16), ring, fill


def test_thin_bright_proxy_keeps_the_ring_not_noise_or_fill() -> None:
    image, ring, fill = _ring_slice(np.random.default_rng(1))
    proxy = bone_proxy.bone_proxy(image[None], "thin")[0]
    assert (proxy & ring).sum() >= 0.8 * ring.sum()
    assert not (proxy & fill).any()  # reconstruction fill is not bone
    near_ring = np.zeros_like(ring)
    near_ring[55:146, 105:196] = True
    assert not (proxy & ~near_ring).any()  # isolated bright pixels and the gradient are not bone


def test_phase_proxy_drops_small_pieces_and_recall() -> None:
    array = np.full((2, 64, 64), 10, np.uint8)
    array[:, 10:40, 10:40] = 200  # 900 px of bone per slice
    array[:, 50, 50] = 200  # a 1-px bright speck
    proxy = bone_proxy.bone_proxy(array, "phase", min_px=100)
    assert proxy.sum() == 2 * 900 and not proxy[:, 50, 50].any()
    labels = np.zeros(array.shape, np.uint8)
    labels[:, 10:25, 10:40] = 1  # half the bone
    assert bone_proxy.proxy_recall(labels, proxy) == pytest.approx(0.5)
    assert bone_proxy.proxy_recall(labels, np.zeros_like(proxy)) is None
    with pytest.raises(ValueError, match="unknown bone proxy"):
        bone_proxy.bone_proxy(array, "gold")


def _tif_bytes(array: np.ndarray, tmp: Path) -> bytes:
    path = tmp / "v.tif"
    tifffile.imwrite(path, array, photometric="minisblack")
    return path.read_bytes()


def test_qim3d_scans_from_wheel_and_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cement = rng.integers(0, 255, (4, 16, 16), dtype=np.uint8)
    wheel = tmp_path / "qim3d-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("qim3d/examples/cement_128x128x128.tif", _tif_bytes(cement, tmp_path))
        z.writestr("qim3d/examples/blobs_256x256x256.tif", _tif_bytes(cement, tmp_path))  # synthetic: not read
        z.writestr("qim3d/io/cement_128x128x128.tif", _tif_bytes(cement[:1], tmp_path))  # not an example
    (scan,) = real_scans.qim3d_scans(wheel)
    assert scan.name == "qim3d_cement_128x128x128" and scan.content == "none" and scan.proxy is None
    np.testing.assert_array_equal(scan.volume.array, cement)
    assert "MIT" in scan.source
    folder = tmp_path / "extracted"
    folder.mkdir()
    tifffile.imwrite(folder / "bone_128x128x128.tif", cement, photometric="minisblack")
    (bone,) = real_scans.qim3d_scans(folder)
    assert bone.content == "bone" and bone.proxy == "phase"
    with pytest.raises(ValueError, match="not a wheel"):
        real_scans.qim3d_scans(tmp_path / "v.tif")
    with pytest.raises(ValueError, match="no such wheel or folder"):
        real_scans.qim3d_scans(tmp_path / "m")
    (tmp_path / "m").mkdir()  # an empty folder
    with pytest.raises(ValueError, match="none of the qim3d volumes"):
        real_scans.qim3d_scans(tmp_path / "m")
    tifffile.imwrite(folder / "shell_225x128x128.tif", cement[0])
    with pytest.raises(ValueError, match="2D"):
        real_scans.qim3d_scans(folder)


def test_measure_false_positive_share_and_bone_kept() -> None:
    labels = np.zeros((2, 32, 32), np.uint8)
    labels[:, :8, :] = 1
    proxy = np.zeros(labels.shape, bool)
    proxy[:, :16, :] = True
    none = real_scans.RealScan("c", Volume(np.zeros((2, 32, 32), np.uint8)), None, "none", None, "test")
    row = speckle.measure(none, labels, None)
    assert row["false_positive_share"] == pytest.approx(0.25) and row["bone_kept"] is None
    bone = real_scans.RealScan("b", Volume(np.zeros((4, 32, 32), np.uint8)), (1, 3), "bone", "phase", "test")
    row = speckle.measure(bone, labels, proxy)
    assert row["false_positive_share"] is None and row["bone_kept"] == pytest.approx(0.5)
    assert row["slices"] == [1, 3] and row["proxy_fraction"] == pytest.approx(0.5)


def test_montage_has_whole_slice_and_one_to_one_crops() -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 1000, (1, 300, 600)).astype(np.uint16)
    labels = (rng.random((1, 300, 600)) > 0.995).astype(np.uint8)  # scattered 1-px specks
    rgb = speckle.montage(Volume(grey), Volume(labels), CLASSES, 0, 30, crops=2, crop=100)
    # whole slice: 512 x 256 panel + 4 px gaps each side; two 100 px crops shown 1:1 (+ gaps)
    assert rgb.shape == (4 + 256 + 4, (4 + 512 + 4) + 2 * (4 + 100 + 4), 3)
    proxy = np.zeros((300, 600), bool)
    proxy[200:260, 500:560] = True
    rgb = speckle.montage(Volume(grey), Volume(labels), CLASSES, 0, 30, crops=2, crop=100, proxy=proxy)
    assert rgb.shape[1] == (4 + 512 + 4) + 3 * (4 + 100 + 4)
    first_crop = rgb[4:104, 520 + 4:520 + 104]
    assert (first_crop == np.round(np.array(TRUTH_COLOR) * 255)).all(axis=2).sum() >= 4 * 50  # the proxy outline
    small = speckle.montage(Volume(grey[:, :80, :90]), Volume(labels[:, :80, :90]), CLASSES, 0, 30, 2, 100,
                            proxy[:80, :90])
    assert small.shape[1] == 4 + 512 + 4  # nothing to crop from a slice no larger than a crop


def test_report_end_to_end_json_montage_and_no_overwrite(tmp_path: Path, tiny_model_dir: Path) -> None:
    yy, xx = np.mgrid[:64, :64]
    bone = (40 + 160 * (np.hypot(yy - 32, xx - 32) < 14)).astype(np.uint8)
    folder = tmp_path / "qim3d"
    folder.mkdir()
    tifffile.imwrite(folder / "bone_128x128x128.tif", np.repeat(bone[None], 3, axis=0), photometric="minisblack")
    tifffile.imwrite(folder / "cement_128x128x128.tif", np.full((3, 64, 64), 90, np.uint8) + (xx % 7).astype(np.uint8),
                     photometric="minisblack")
    args = ["--real", str(tmp_path / "none"), "--qim3d", str(folder), "--montage-dir", str(tmp_path / "m"),
            "--json", str(tmp_path / "r.json"), "--model", str(tiny_model_dir)]
    assert speckle.main(args) == 0
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    rows = {r["name"]: r for r in report["rows"]}
    assert report["model"] == "tiny-test-unet" and set(rows) == {"qim3d_bone_128x128x128", "qim3d_cement_128x128x128"}
    assert rows["qim3d_bone_128x128x128"]["proxy_fraction"] == pytest.approx(float((bone > 100).mean()), abs=0.01)
    assert 0 <= rows["qim3d_bone_128x128x128"]["bone_kept"] <= 1
    cement = rows["qim3d_cement_128x128x128"]
    assert cement["false_positive_share"] == cement["foreground_fraction"] and cement["bone_kept"] is None
    assert (tmp_path / "m" / "speckle_qim3d_bone_128x128x128_tiny-test-unet.png").stat().st_size > 0  # default tag
    with pytest.raises(SystemExit, match="exists"):
        speckle.main(args)  # refuses before segmenting anything
