"""The bundled model's labels on the demo scan and five phantoms equal the pinned ones (scripts/pin_labels.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _helpers_scripts import load_script
from fossilsegment_engine.inference.predictor import Predictor
from fossilsegment_engine.volume import Volume

REPO = Path(__file__).resolve().parents[1]
PINNED = REPO / "Testing" / "data" / "pinned_labels.npz"


def _pin_script():
    return load_script("pin_labels")


@pytest.fixture(scope="module")
def pinned() -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(PINNED) as data:
        arrays = {k: data[k] for k in data.files}
    return json.loads(str(arrays.pop("spec"))), arrays


@pytest.fixture(scope="module")
def inputs(pinned) -> dict[str, np.ndarray]:
    from fossilsegment_engine.phantom import GENERATOR_VERSION

    # the phantom inputs come from the generator: a new generator version needs a new pin, made with inference
    # code that this test has just shown to give identical labels on the old inputs
    assert pinned[0].get("generator") == GENERATOR_VERSION, (
        f"pinned on {pinned[0].get('generator')} phantoms, the generator is now {GENERATOR_VERSION}: "
        "rerun scripts/pin_labels.py --force with unchanged inference code")
    return dict(_pin_script().cases(pinned[0]))


@pytest.fixture(scope="module")
def predictor(pinned) -> Predictor:
    spec = pinned[0]
    return Predictor.load(spec["model"], device=spec["device"], precision=spec["precision"], backend=spec["backend"])


def test_pinned_file_covers_demo_and_five_phantoms(pinned, inputs):
    spec, labels = pinned
    assert set(labels) == set(inputs)
    assert "demo" in labels and len(spec["phantoms"]) == 5
    assert len({family for _, family in spec["phantoms"]}) == 5  # spread over families
    for name, array in inputs.items():
        assert labels[name].shape == array.shape, name
        assert labels[name].any(), f"{name}: pinned labels are all background"


@pytest.mark.parametrize("name", ["demo", "phantom_1_skull", "phantom_2_long_bone", "phantom_3_vertebra",
                                  "phantom_4_plates", "phantom_5_trabecular"])
def test_labels_equal_the_pinned_ones(name, pinned, inputs, predictor):
    expected = pinned[1][name]
    got = predictor.predict_labels(Volume(inputs[name]), postprocess=None).array
    differing = int((got != expected).sum())
    assert differing == 0, f"{name}: {differing} of {expected.size} voxels differ from the pinned labels"
