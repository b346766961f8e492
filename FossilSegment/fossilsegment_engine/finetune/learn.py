"""TEMPORARY STAND-IN for the lead's few-shot method (replaced at merge): the contract of ``learn_and_segment``.

Fine-tunes the model on the axial annotated slices (the existing recipe), segments the volume with it and
pastes every annotated slice unchanged. Only for testing ``fossilsegment learn`` before the real method lands.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..models import load_model
from ..progress import CancelToken, ProgressCallback, check_cancelled
from ..volume import Volume
from .annotations import Annotation, check_annotation_set, paste_annotations
from .tune import FinetuneOptions, finetune_in_memory


@dataclass
class LearnOptions:
    """Budget, device and seed of one learn run."""

    max_minutes: float = 3.0
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.max_minutes > 0:
            raise InputError(f"a budget of {self.max_minutes:g} minutes leaves no time to learn: give more than 0")


@dataclass
class LearnResult:
    """The uint8 labelmap (the input's geometry, annotated slices pasted) and a run report."""

    labels: Volume
    report: dict[str, Any] = field(default_factory=dict)


def learn_and_segment(volume: Volume, annotations: Sequence[Annotation], model: Any = None,
                      options: LearnOptions | None = None, progress: ProgressCallback | None = None,
                      cancel: CancelToken | None = None) -> LearnResult:
    """Stand-in: fine-tune on the axial annotations (if any), segment, paste the annotations."""
    from ..inference.segmenter import Segmenter

    opts = options or LearnOptions()
    t0 = time.monotonic()
    module, config = load_model(model, device="cpu")
    anns = check_annotation_set(volume, annotations, config.n_classes, config.class_names)
    axial = [a.index for a in anns if a.axis == 0]
    if axial and any(np.any(a.labels > 0) for a in anns if a.axis == 0):
        truth = np.zeros(volume.shape, np.uint8)
        paste_annotations(truth, [a for a in anns if a.axis == 0])
        tuned = finetune_in_memory(volume, volume.with_array(truth), axial, (module, config),
                                   FinetuneOptions(max_minutes=opts.max_minutes, device=opts.device, seed=opts.seed,
                                                   max_steps=20, crop=64), progress=progress, cancel=cancel)
        module = tuned.module
    check_cancelled(cancel)
    labels = Segmenter.from_module(module, config, device=opts.device).predict(volume, cancel=cancel)
    array = np.array(labels.array, dtype=np.uint8)
    paste_annotations(array, anns)
    return LearnResult(volume.with_array(array), {"method": "stand-in", "annotations": [a.name for a in anns],
                                                  "seconds": round(time.monotonic() - t0, 1)})
