"""Backwards compatibility of model folders: the bundled model and version-1 ``config.json`` files.

The reference files in ``Testing/data`` were written by the code before the architecture registry:
``fossil-bone-v2.1_reference.npz`` holds the bundled model's state-dict keys (in order), a fixed input and its
logits; ``legacy_config_layouts.json`` holds, for version-1 configs, the SHA-256 of the built network's
``key:shape`` lines.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fossilsegment_engine.models import ModelConfig, build_model, load_model, resolve_model_dir

DATA = Path(__file__).parent / "data"
LAYOUTS = json.loads((DATA / "legacy_config_layouts.json").read_text(encoding="utf-8"))


def test_bundled_model_loads_unchanged() -> None:
    ref = np.load(DATA / "fossil-bone-v2.1_reference.npz", allow_pickle=False)
    model, config = load_model("fossil-bone-v2.1")
    stored = load_file(str(resolve_model_dir("fossil-bone-v2.1") / config.weights_file))
    state = model.state_dict()
    assert list(state) == list(ref["keys"])
    assert set(stored) == set(state)
    for key, tensor in stored.items():
        assert state[key].dtype == tensor.dtype and torch.equal(state[key], tensor), key
    with torch.no_grad():
        logits = model(torch.from_numpy(ref["input"])).numpy()
    np.testing.assert_allclose(logits, ref["logits"], rtol=1e-5, atol=1e-5)
    assert np.array_equal(logits.argmax(1), ref["logits"].argmax(1))


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_version1_config_builds_the_same_network(name: str) -> None:
    config = ModelConfig.from_dict({"format_version": 1, "name": name, **LAYOUTS[name]["config_v1"]})
    with torch.device("meta"):
        state = build_model(config).state_dict()
    layout = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in state.items())
    assert len(state) == LAYOUTS[name]["n_tensors"]
    assert hashlib.sha256(layout.encode()).hexdigest() == LAYOUTS[name]["layout_sha256"]
