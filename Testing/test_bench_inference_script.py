"""scripts/bench_inference.py: realistic input, every column, naive reference, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from _helpers_scripts import load_script
from fossilsegment_engine.errors import DeviceError
from fossilsegment_engine.inference.predictor import Predictor
from fossilsegment_engine.io.volume_io import read_volume
from fossilsegment_engine.models.store import load_model
from fossilsegment_engine.resources import resource_path

CPU = torch.device("cpu")


def _script():
    return load_script("bench_inference")


benchmark = _script()
bench_volume, naive_labels, parse_modes = benchmark.bench_volume, benchmark.naive_labels, benchmark.parse_modes


@pytest.mark.slow
def test_bench_prints_every_column_and_writes_json(tiny_model_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    code = benchmark.main(["--model", str(tiny_model_dir), "--device", "cpu", "--size", "48", "--slices", "3",
                 "--modes", "fp32", "bf16,auto", "--repeat", "1", "--batch-size", "2", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    for column in ("mode", "batch", "slices/s", "voxels/s", "peak RSS MiB", "x naive", "agree %", "first run s"):
        assert column in text
    for mode in ("naive-fp32", "eager-fp32", "eager-bf16", "auto=eager-"):
        assert mode in text
    assert "auto picks eager-" in text and "3 slices of 48x48" in text
    result = json.loads(out.read_text())
    rows = {r["mode"]: r for r in result["rows"]}
    assert list(rows) == ["naive-fp32", "eager-fp32", "eager-bf16", "auto"]
    naive = rows["naive-fp32"]
    assert naive["agreement"] == 1.0 and naive["speedup_vs_naive"] == 1.0 and naive["batch_size"] == 1
    for r in rows.values():
        assert r["slices_per_s"] == pytest.approx(3 / r["seconds"])
        assert r["voxels_per_s"] == pytest.approx(3 * 48 * 48 / r["seconds"])
        assert r["speedup_vs_naive"] == pytest.approx(naive["seconds"] / r["seconds"])
        assert r["peak_rss_mib"] > 50 and r["peak_gpu_mib"] is None
    assert rows["eager-fp32"]["agreement"] >= 0.999 and rows["eager-bf16"]["agreement"] >= 0.99
    assert rows["eager-fp32"]["batch_size"] == 2


def test_bench_refuses_an_existing_json_before_working(tiny_model_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    out.write_text("keep")
    assert benchmark.main(["--model", str(tiny_model_dir), "--size", "32", "--slices", "1", "--json", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "keep"


@pytest.mark.parametrize("args,message", [
    (["--modes", "turbo"], "unknown benchmark mode 'turbo'"),
    (["--modes", "fp16"], "fp16 is for GPUs"),
    (["--size", "8"], "size must be ≥ 16"),
    (["--repeat", "0"], "repeat must be ≥ 1"),
    (["--threads", "0"], "--threads must be ≥ 1"),
])
def test_bench_bad_options_are_clear_errors(tiny_model_dir: Path, capsys: pytest.CaptureFixture, args: list[str],
                                            message: str) -> None:
    assert benchmark.main(["--model", str(tiny_model_dir), "--device", "cpu", "--slices", "1", *args]) == 2
    assert message in capsys.readouterr().err


def test_default_modes_and_aliases() -> None:
    assert parse_modes(["compiled", "fp32", "eager-fp32"], CPU) == ["compiled-bf16", "eager-fp32"]
    defaults = parse_modes(None, CPU)
    assert defaults[:2] == ["eager-fp32", "eager-bf16"]
    with pytest.raises(DeviceError, match="unknown benchmark mode"):
        parse_modes(["naive"], CPU)


def test_int8_mode_is_listed_only_where_it_can_run(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_modes(["int8"], CPU) == ["int8-bf16"]
    monkeypatch.setattr(benchmark, "can_compile", lambda dev: True)
    monkeypatch.setattr(benchmark, "torchao_available", lambda: True)
    assert parse_modes(None, CPU)[-1] == "int8-bf16"
    monkeypatch.setattr(benchmark, "torchao_available", lambda: False)
    assert "int8-bf16" not in parse_modes(None, CPU)


def test_bench_volume_is_the_demo_scan_mirrored() -> None:
    demo = read_volume(resource_path("SampleData/fossil_demo_phantom.nrrd")).array
    vol = bench_volume(512, 4)
    assert vol.shape == (4, 512, 512) and vol.array.dtype == demo.dtype
    k0 = (demo.shape[0] - 4) // 2
    n = demo.shape[1]
    assert np.array_equal(vol.array[:, :n, :n], demo[k0 : k0 + 4])
    assert np.array_equal(vol.array[:, n : 2 * n, :n], demo[k0 : k0 + 4, ::-1])  # mirrored, no seam
    long = bench_volume(32, 3 * demo.shape[0])
    assert long.shape == (3 * demo.shape[0], 32, 32)
    assert np.array_equal(long.array[demo.shape[0] :][: demo.shape[0]], demo[::-1, :32, :32])


@pytest.mark.slow
@pytest.mark.parametrize("size", [80, 160])  # > the tiny model's 64-px tiles: read whole (80²) / tiled (160²)
def test_naive_loop_matches_the_segmenter_in_fp32(tiny_model_dir: Path, size: int) -> None:
    vol = bench_volume(size, 5)
    module, config = load_model(tiny_model_dir)
    reference = naive_labels(module, config, vol, CPU)
    labels = Predictor.load(tiny_model_dir, device="cpu", precision="fp32", backend="eager").predict_labels(
        vol, postprocess=None).array
    assert len(np.unique(reference)) > 1
    assert (reference == labels).mean() >= 0.9999


def test_bench_auto_row_compiles_a_large_job_and_never_picks_int8(tiny_model_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    from fossilsegment_engine.inference import backends, device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(backends, "can_compile", lambda dev: True)
    monkeypatch.setattr(backends, "torchao_available", lambda: True)
    monkeypatch.setattr(backends, "COMPILE_MIN_PIXELS", 3 * 48 * 48)  # the bench's 3 slices count as a large job
    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)
    monkeypatch.setattr(backends, "quantize_int8", lambda *a, **k: pytest.fail("auto must not quantize"))
    out = tmp_path / "bench.json"
    assert benchmark.main(["--model", str(tiny_model_dir), "--device", "cpu", "--size", "48", "--slices", "3",
                 "--modes", "auto", "--repeat", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "auto=compiled-bf16" in text and "auto picks compiled-bf16 for this job" in text
    assert "never int8" in text
    assert json.loads(out.read_text())["auto_mode"] == "compiled-bf16"
    assert benchmark._auto_choice(None, CPU, 3, 48) == "compiled-bf16"  # without an auto row: the rule
    assert benchmark._auto_choice(None, CPU, 2, 48) == "eager-bf16"  # a smaller job
