"""Few-shot adaptation to a new specimen (issue 5): fine-tune a model on a few annotated axial slices.

- :mod:`.annotations` parses and checks the slice list and the labelmap (nothing is written on bad input).
- :mod:`.tune` ``finetune_in_memory`` (→ module, config, report) and ``finetune`` (→ a saved model folder).
"""

from .annotations import check_annotations, parse_slice_list
from .tune import FinetuneOptions, FinetuneResult, finetune, finetune_in_memory

__all__ = ["FinetuneOptions", "FinetuneResult", "check_annotations", "finetune", "finetune_in_memory",
           "parse_slice_list"]
