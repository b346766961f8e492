"""Inference backends: eager/bf16/compiled/int8 agree with fp32, compile failures fall back, ``auto`` rules, errors."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fossilsegment_engine.errors import DeviceError
from fossilsegment_engine.inference import backends
from fossilsegment_engine.inference.backends import COMPILE_MIN_PIXELS, CompiledNetwork, auto_compiles, check_backend
from fossilsegment_engine.inference.predictor import Predictor
from fossilsegment_engine.volume import Volume

CPU = torch.device("cpu")


def _scan(shape=(6, 40, 72), seed=1) -> Volume:
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(shape)
    blob = (j - 20) ** 2 / 120 + (i - 36) ** 2 / 400 + (k - 3) ** 2 / 9 < 1
    return Volume((800 + 900 * blob + rng.normal(0, 60, shape)).astype(np.int16), spacing=(0.2, 0.3, 0.4))


def _demo(size: int, slices: int) -> Volume:
    """The demo scan's central ``slices`` slices, cropped to ``size`` × ``size``."""
    from fossilsegment_engine.io.volume_io import read_volume
    from fossilsegment_engine.resources import DEMO_SCAN, resource_path

    demo = read_volume(resource_path(DEMO_SCAN))
    k0 = (demo.shape[0] - slices) // 2
    return Volume(np.ascontiguousarray(demo.array[k0 : k0 + slices, :size, :size]), spacing=demo.spacing)


def _labels(model_dir: Path, **kw) -> np.ndarray:
    return Predictor.load(model_dir, device="cpu", **kw).predict_labels(_scan(), postprocess=None).array


class _Recorder(nn.Module):
    """Doubles its input per channel pair; records the shapes it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return torch.cat([x, -x], dim=1)


def test_eager_fp32_is_the_default_at_fp32(tiny_model_dir: Path) -> None:
    default = _labels(tiny_model_dir, precision="fp32", batch_size=4)
    assert np.array_equal(default, _labels(tiny_model_dir, precision="fp32", backend="eager", batch_size=4))
    assert Predictor.load(tiny_model_dir, device="cpu", precision="fp32").mode == "eager-fp32"


def test_bf16_agrees_with_fp32(tiny_model_dir: Path) -> None:
    fp32 = _labels(tiny_model_dir, precision="fp32", backend="eager")
    bf16 = _labels(tiny_model_dir, precision="bf16", backend="eager")
    assert len(np.unique(fp32)) > 1  # the comparison means something
    assert (fp32 == bf16).mean() >= 0.99


class _SmallNet(nn.Module):
    """Conv-BN-ReLU-Conv with its threshold set at the median of ``sample``: quick to compile, not constant."""

    def __init__(self, sample: torch.Tensor) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 1, 3, padding=1))
        self.body[1].running_mean.uniform_(-0.1, 0.1)
        self.body[1].running_var.uniform_(0.5, 2.0)
        self.eval()
        with torch.no_grad():
            self.body[3].bias -= self.body(sample).median()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.body(x)
        return torch.cat([-s, s], dim=1)


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="torch.compile needs a C++ compiler")
def test_compiled_agrees_with_fp32_and_compiles_one_shape() -> None:
    from fossilsegment_engine.models.config import ModelConfig

    config = ModelConfig(name="small", arch="unet", arch_options={"encoder_depth": 3}, context_slices=1,
                         tile_size=64, tile_overlap=8)
    vol = _scan(shape=(6, 40, 40))
    from fossilsegment_engine.inference.normalize import apply_intensity_range, volume_intensity_range

    sample = torch.from_numpy(apply_intensity_range(vol.array[:, None], *volume_intensity_range(vol.array)))
    fp32 = Predictor.from_module(_SmallNet(sample), config, device="cpu", batch_size=4, precision="fp32",
                                 backend="eager").predict_labels(vol, postprocess=None).array
    seg = Predictor.from_module(_SmallNet(sample), config, device="cpu", batch_size=4, precision="bf16",
                                backend="compiled")
    out = seg.predict_labels(vol, postprocess=None).array  # 6 slices: batches of 4 and 2 (padded to 4)
    assert seg.mode == "compiled-bf16" and not seg._compiled.failed
    assert list(seg._compiled._batch.values()) == [4]  # one graph, batch 4: the short batch did not recompile
    assert len(np.unique(fp32)) > 1 and (fp32 == out).mean() >= 0.99


def test_short_batches_are_padded_to_the_compiled_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)  # stand-in: "compiled" = the module
    module = _Recorder()
    runner = CompiledNetwork(module, CPU, None)
    x = torch.arange(5 * 2 * 3 * 4, dtype=torch.float32).reshape(5, 2, 3, 4)
    assert torch.equal(runner(x[:4]), torch.cat([x[:4], -x[:4]], dim=1))
    short = runner(x[4:])
    assert torch.equal(short, torch.cat([x[4:], -x[4:]], dim=1))
    assert module.shapes == [(4, 2, 3, 4), (4, 2, 3, 4)]  # the 1-slice batch ran as 4


@pytest.mark.parametrize("backend", ["compiled", "auto"])
def test_compile_failure_falls_back_to_eager_once(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture, backend: str) -> None:
    expected = _labels(tiny_model_dir, precision="bf16", backend="eager", batch_size=4)
    tries: list[nn.Module] = []

    def broken(module, **kwargs):
        tries.append(module)
        raise RuntimeError("Compiler: cc is not found")

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(backends, "can_compile", lambda dev: True)
    monkeypatch.setattr(backends, "COMPILE_MIN_PIXELS", 1)  # auto: every job is large
    seg = Predictor.load(tiny_model_dir, device="cpu", precision="bf16", backend=backend, batch_size=4)
    with caplog.at_level(logging.WARNING):
        out = seg.predict_labels(_scan(), postprocess=None).array
        again = seg.predict_labels(_scan(), postprocess=None).array
    assert caplog.text.count("torch.compile failed") == 1 and "cc is not found" in caplog.text
    assert len(tries) == 1  # the predictor does not try again
    assert np.array_equal(out, expected) and np.array_equal(again, expected)
    assert seg.mode == "eager-bf16"


def test_failure_at_the_first_compiled_call_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def compile_that_fails_later(module, **kw):
        def call(x):
            raise RuntimeError("InductorError: C++ compile error")
        return call

    monkeypatch.setattr(torch, "compile", compile_that_fails_later)
    runner = CompiledNetwork(_Recorder(), CPU, None)
    x = torch.ones(2, 1, 4, 4)
    assert torch.equal(runner(x), torch.cat([x, -x], dim=1))
    assert runner.failed
    assert torch.equal(runner(x), torch.cat([x, -x], dim=1))  # eager from then on


def test_out_of_memory_in_a_compiled_call_is_not_a_compile_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def oom(module, **kw):
        def call(x):
            raise torch.OutOfMemoryError("fake OOM")
        return call

    monkeypatch.setattr(torch, "compile", oom)
    runner = CompiledNetwork(_Recorder(), CPU, None)
    with pytest.raises(torch.OutOfMemoryError):
        runner(torch.ones(2, 1, 4, 4))
    assert not runner.failed and runner._batch == {}


@pytest.mark.parametrize("name", ["turbo", "onnx", ""])
def test_unknown_backend_is_a_clear_error(tiny_model_dir: Path, name: str) -> None:
    with pytest.raises(DeviceError, match="unknown backend .* use one of auto, eager, compiled"):
        Predictor.load(tiny_model_dir, device="cpu", backend=name)
    assert check_backend(" Compiled ") == "compiled"


def test_auto_compiles_only_large_low_precision_cpu_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "can_compile", lambda dev: True)
    assert not auto_compiles(CPU, torch.bfloat16, 255 * 512 * 512)
    assert 256 * 512 * 512 >= COMPILE_MIN_PIXELS and auto_compiles(CPU, torch.bfloat16, 256 * 512 * 512)
    assert not auto_compiles(CPU, None, 4000 * 512 * 512)  # compiling fp32 does not pay on the CPU
    assert not auto_compiles(torch.device("cuda", 0), torch.bfloat16, 4000 * 512 * 512)
    monkeypatch.setattr(backends, "can_compile", lambda dev: False)
    assert not auto_compiles(CPU, torch.bfloat16, 4000 * 512 * 512)  # no C++ compiler: never tried


def test_segmenter_plans_each_job_so_auto_compiles_large_ones(tiny_model_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[nn.Module] = []

    def fake_compile(module, **kw):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(backends, "can_compile", lambda dev: True)
    monkeypatch.setattr(backends, "quantize_int8", lambda *a, **k: pytest.fail("auto must not quantize"))
    vol = _scan()  # 6 x 40 x 72 = 17280 pixels
    monkeypatch.setattr(backends, "COMPILE_MIN_PIXELS", 17280)
    seg = Predictor.load(tiny_model_dir, device="cpu", precision="bf16", batch_size=4)
    seg.predict_labels(vol, slice_range=(0, 5))  # a smaller job: eager
    assert seg.mode == "eager-bf16" and not compiled
    seg.predict_labels(vol)
    assert seg.mode == "compiled-bf16" and len(compiled) == 1
    seg.predict_labels(vol)
    assert len(compiled) == 1  # compiled once per predictor


def test_segment_command_passes_the_backend(tiny_model_dir: Path) -> None:
    import argparse

    from fossilsegment_engine.cli.segment_cmd import load_segmenter

    args = argparse.Namespace(model=str(tiny_model_dir), device="cpu", batch_size=None, precision="fp32",
                              backend="compiled")
    assert load_segmenter(args).mode == "compiled-fp32"  # explicit: compiled whatever the job size


# ---------------------------------------------------------------- int8 (PT2E static quantization, optional torchao)
needs_torchao = pytest.mark.skipif(not backends.torchao_available(), reason="the int8 backend needs torchao")


def _model_inputs(model: Path | None) -> tuple[nn.Module, torch.Tensor]:
    """The module and calibration-style inputs from the demo scan (96², 8 slices)."""
    from fossilsegment_engine.inference.normalize import volume_intensity_range
    from fossilsegment_engine.models.store import load_model

    module, config = load_model(model)
    array = _demo(96, 8).array
    lo, hi = volume_intensity_range(array, config.normalization)
    return module.eval(), backends.calibration_stack(array, lo, hi, config.context_slices, 8)


@needs_torchao
@pytest.mark.slow
def test_int8_quantized_model_agrees_with_fp32() -> None:
    # the default (trained) model: a random tiny one has near-ties everywhere (median softmax margin 0.006)
    module, x = _model_inputs(None)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    quantized = backends.quantize_int8(module, x)
    with torch.no_grad():
        ref, out = module(x).argmax(1), quantized(x).argmax(1)
    assert len(torch.unique(ref)) > 1
    assert (ref == out).float().mean().item() >= 0.99
    assert "quantize_per_tensor" in str(quantized.graph)  # really quantized, not a float copy
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in before.items())  # the module is left alone


def test_int8_keeps_the_stem_and_the_head_in_floating_point(tiny_model_dir: Path) -> None:
    module, _ = _model_inputs(tiny_model_dir)
    kept = backends.int8_kept_layers(module)
    first = next(n for n, m in module.named_modules() if isinstance(m, nn.Conv2d))
    assert kept == [first, "segmentation_head"] and first.startswith("encoder.")


def test_calibration_stack_is_evenly_spaced_centre_crops() -> None:
    from fossilsegment_engine.inference.context import context_slices
    from fossilsegment_engine.inference.normalize import apply_intensity_range

    array = np.random.default_rng(0).normal(100, 20, (10, 40, 70)).astype(np.float32)
    out = backends.calibration_stack(array, 60.0, 140.0, 3, 16, count=4, size=512)
    expected = apply_intensity_range(context_slices(array[:, 4:36, 3:67], [0, 3, 6, 9], 3), 60.0, 140.0)
    assert np.array_equal(out.numpy(), expected)
    small = backends.calibration_stack(array[:, :8, :20], 60.0, 140.0, 1, 16, count=20, size=512)
    assert small.shape == (10, 1, 16, 16)  # every slice once; 8 rows padded to 16, 20 columns cropped to 16
    assert np.array_equal(small[:, :, 8:].numpy(), np.repeat(small[:, :, 7:8].numpy(), 8, axis=2))


def test_int8_without_torchao_is_a_clear_error(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = backends.importlib.import_module

    def no_torchao(name: str, *args, **kwargs):
        if name.startswith("torchao"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(backends.importlib, "import_module", no_torchao)
    with pytest.raises(DeviceError, match=r"int8 backend needs torchao .*pip install torchao"):
        Predictor.load(tiny_model_dir, device="cpu", backend="int8")


def test_int8_is_for_the_cpu_only() -> None:
    with pytest.raises(DeviceError, match="int8 backend runs on the CPU only"):
        backends.check_int8(torch.device("cuda", 0))


@needs_torchao
def test_int8_quantization_failure_falls_back_to_eager(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    expected = _labels(tiny_model_dir, precision="bf16", backend="eager", batch_size=4)

    def broken(module, samples, batch=4):
        raise RuntimeError("cannot export this layer")

    monkeypatch.setattr(backends, "quantize_int8", broken)
    seg = Predictor.load(tiny_model_dir, device="cpu", precision="bf16", backend="int8", batch_size=4)
    assert seg.mode == "int8-bf16"
    with caplog.at_level(logging.WARNING):
        out = seg.predict_labels(_scan(), postprocess=None).array
    assert "int8 quantization failed" in caplog.text and np.array_equal(out, expected)
    assert seg.mode == "eager-bf16"


@pytest.mark.slow
@needs_torchao
@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="torch.compile needs a C++ compiler")
def test_int8_segmenter_agrees_and_calibrates_once_per_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[torch.Tensor] = []
    real = backends.quantize_int8

    def counting(module, samples, batch=4):
        calls.append(samples)
        return real(module, samples, batch)

    monkeypatch.setattr(backends, "quantize_int8", counting)
    vol = _demo(96, 6)
    fp32 = Predictor.load(None, device="cpu", precision="fp32", backend="eager").predict_labels(vol, postprocess=None).array
    seg = Predictor.load(None, device="cpu", precision="bf16", backend="int8", batch_size=4)
    out = seg.predict_labels(vol, postprocess=None).array
    assert seg.mode == "int8-bf16" and not seg._int8.failed
    assert len(np.unique(fp32)) > 1 and (fp32 == out).mean() >= 0.99
    assert np.array_equal(seg.predict_labels(vol, postprocess=None).array, out)  # same volume: same calibration
    assert len(calls) == 1 and calls[0].shape[0] == 6  # every one of the 6 slices calibrated
    seg.predict_labels(_demo(96, 7), postprocess=None)
    assert len(calls) == 2  # a new volume is calibrated on its own slices
