"""Device and precision choice: parsing, fallbacks, and clear errors when a device is missing."""

from __future__ import annotations

import pytest
import torch

from fossilsegment_engine.errors import FossilSegmentError
from fossilsegment_engine.inference import device as dev
from fossilsegment_engine.inference.device import choose_device, describe_devices, resolve_precision


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(dev, "describe_devices", lambda: ["cpu (2 threads)", "cuda:0 X", "cuda:1 X"])


@pytest.mark.parametrize("text", ["cpu", " CPU ", "auto", None, torch.device("cpu")])
def test_cpu_and_auto_without_gpu(no_gpu: None, text) -> None:
    assert choose_device(text) == torch.device("cpu")


@pytest.mark.parametrize("text", ["cuda", "gpu", "cuda:0", "GPU:1", "mps"])
def test_missing_gpu_is_a_clear_error(no_gpu: None, text: str) -> None:
    with pytest.raises(FossilSegmentError, match=r"no (CUDA|Apple MPS) GPU is available \(found: cpu \("):
        choose_device(text)


@pytest.mark.parametrize("text", ["tpu", "cuda:x", "cuda1", ""])
def test_unknown_device_is_an_error(text: str) -> None:
    with pytest.raises(FossilSegmentError, match="unknown device"):
        choose_device(text)


def test_gpu_names_map_to_cuda(two_gpus: None) -> None:
    assert choose_device("auto") == torch.device("cuda", 0)
    assert choose_device("gpu") == torch.device("cuda", 0)
    assert choose_device("cuda:1") == torch.device("cuda", 1)
    assert choose_device("gpu:1") == torch.device("cuda", 1)
    with pytest.raises(FossilSegmentError, match="no CUDA GPU 2"):
        choose_device("cuda:2")


def test_describe_devices_starts_with_the_cpu() -> None:
    found = describe_devices()
    assert found[0].startswith("cpu (") and found[0].endswith("threads)")


def test_precision_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", cpu) is None  # emulated bf16 is slower than fp32
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", cpu) is torch.bfloat16
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("BF16", cpu) is torch.bfloat16
    with pytest.raises(FossilSegmentError, match="fp16 is for GPUs"):
        resolve_precision("fp16", cpu)
    with pytest.raises(FossilSegmentError, match="unknown precision"):
        resolve_precision("fp8", cpu)


@pytest.mark.parametrize("bf16,expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_precision_on_cuda(monkeypatch: pytest.MonkeyPatch, bf16: bool, expected: torch.dtype) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    cuda = torch.device("cuda", 0)
    assert resolve_precision("auto", cuda) is expected
    assert resolve_precision("fp16", cuda) is torch.float16


def test_autocast_context_runs_bf16_on_cpu() -> None:
    a = torch.rand(4, 4)
    with dev.autocast(torch.device("cpu"), torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
    with dev.autocast(torch.device("cpu"), None):
        assert (a @ a).dtype == torch.float32
