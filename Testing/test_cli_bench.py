"""``fossilsegment bench`` and the benchmark engine: realistic input, every column, naive reference, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fossilsegment_engine.cli import main
from fossilsegment_engine.errors import DeviceError
from fossilsegment_engine.inference.benchmark import bench_volume, naive_labels, parse_modes
from fossilsegment_engine.inference.segmenter import Segmenter
from fossilsegment_engine.io.volume_io import read_volume
from fossilsegment_engine.models.store import load_model
from fossilsegment_engine.resources import resource_path

CPU = torch.device("cpu")


@pytest.mark.slow
def test_bench_prints_every_column_and_writes_json(tiny_model_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    code = main(["bench", "--model", str(tiny_model_dir), "--device", "cpu", "--size", "48", "--slices", "3",
                 "--modes", "fp32", "bf16,auto", "--repeat", "1", "--batch-size", "2", "-o", str(out)])
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
    assert main(["bench", "--model", str(tiny_model_dir), "--size", "32", "--slices", "1", "-o", str(out)]) == 2
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
    assert main(["bench", "--model", str(tiny_model_dir), "--device", "cpu", "--slices", "1", *args]) == 2
    assert message in capsys.readouterr().err


def test_default_modes_and_aliases() -> None:
    assert parse_modes(["compiled", "fp32", "eager-fp32"], CPU) == ["compiled-bf16", "eager-fp32"]
    defaults = parse_modes(None, CPU)
    assert defaults[:2] == ["eager-fp32", "eager-bf16"]
    with pytest.raises(DeviceError, match="unknown benchmark mode"):
        parse_modes(["naive"], CPU)


def test_int8_mode_is_listed_only_where_it_can_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from fossilsegment_engine.inference import benchmark

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
def test_naive_loop_matches_the_segmenter_in_fp32(tiny_model_dir: Path) -> None:
    vol = bench_volume(80, 5)  # 80 > the tiny model's 64-px tiles: the naive loop tiles and blends too
    module, config = load_model(tiny_model_dir)
    reference = naive_labels(module, config, vol, CPU)
    labels = Segmenter(tiny_model_dir, device="cpu", precision="fp32", backend="eager").predict(
        vol, postprocess=None).array
    assert len(np.unique(reference)) > 1
    assert (reference == labels).mean() >= 0.9999


def test_bench_auto_row_runs_the_int8_check_on_a_large_job(tiny_model_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    import copy

    from fossilsegment_engine.inference import backends, benchmark, device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(backends, "can_compile", lambda dev: True)
    monkeypatch.setattr(backends, "torchao_available", lambda: True)
    monkeypatch.setattr(backends, "COMPILE_MIN_PIXELS", 1)  # the bench's 3 slices count as a large job
    monkeypatch.setattr(backends, "INT8_MIN_AGREEMENT", 0.0)  # the tiny random model has near-ties
    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)
    checked: list[torch.Tensor] = []

    def fake_quantize(module, samples, batch=4):
        checked.append(samples)
        return copy.deepcopy(module)

    monkeypatch.setattr(backends, "quantize_int8", fake_quantize)
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(tiny_model_dir), "--device", "cpu", "--size", "48", "--slices", "3",
                 "--modes", "auto", "--repeat", "1", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "auto=int8-bf16" in text and "auto picks int8-bf16 for this job (int8 sample agreement" in text
    assert "run int8-bf16 if torchao is installed" in text and len(checked) == 1  # once for the bench volume
    result = json.loads(out.read_text())
    assert 0.5 < result["auto_int8_agreement"] <= 1 and result["auto_mode"] == "int8-bf16"
    module, _ = load_model(tiny_model_dir)
    mode, agreement = benchmark._auto_choice(None, module, CPU, 3, 48)  # without an auto row: the rule, not run
    assert mode.startswith("int8-bf16 or compiled-bf16") and agreement is None
