"""Few-shot adaptation to a new specimen (issue 5): fine-tune a model on a few annotated axial slices.

- :mod:`.annotations` parses and checks the slice list and the labelmap (nothing is written on bad input), for
  axial slices (``finetune``) and for slices along any axis (:class:`Annotation`, ``learn``).
- :mod:`.tune` ``finetune_in_memory`` (→ module, config, report) and ``finetune`` (→ a saved model folder).
"""

from .annotations import (Annotation, annotations_from_labelmap, check_annotation_set, check_annotations,
                          parse_slice_list, parse_slice_refs, paste_annotations)

_TUNE = ("FinetuneOptions", "FinetuneResult", "finetune", "finetune_in_memory")


def __getattr__(name: str) -> object:
    """The fine-tuning names load torch, so they are imported on first use (the CLI's --help stays fast)."""
    if name not in _TUNE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import tune

    return getattr(tune, name)

__all__ = ["Annotation", "FinetuneOptions", "FinetuneResult", "annotations_from_labelmap", "check_annotation_set",
           "check_annotations", "finetune", "finetune_in_memory", "parse_slice_list", "parse_slice_refs",
           "paste_annotations"]
