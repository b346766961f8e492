"""Few-shot adaptation to a new specimen (issue 5): fine-tune a model on a few annotated axial slices.

- :mod:`.annotations` parses and checks the slice list and the labelmap (nothing is written on bad input), for
  axial slices (``finetune``) and for slices along any axis (:class:`Annotation`, ``learn``).
- :mod:`.tune` ``finetune_in_memory`` (→ module, config, report) and ``finetune`` (→ a saved model folder).
"""

from .annotations import (Annotation, annotations_from_labelmap, check_annotation_set, check_annotations,
                          parse_slice_list, parse_slice_refs, paste_annotations)
from .tune import FinetuneOptions, FinetuneResult, finetune, finetune_in_memory

__all__ = ["Annotation", "FinetuneOptions", "FinetuneResult", "annotations_from_labelmap", "check_annotation_set",
           "check_annotations", "finetune", "finetune_in_memory", "parse_slice_list", "parse_slice_refs",
           "paste_annotations"]
