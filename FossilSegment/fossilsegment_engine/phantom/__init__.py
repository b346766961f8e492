"""Synthetic fossil CT with exact ground truth: the labelled training data of FossilSegment.

``generate(seed, size, family, teeth) -> (ct Volume uint16, labels Volume uint8, info)`` and
``write(outdir, seed, ...)``; labels 0 matrix/air, 1 bone, 2 tooth. See docs/PHANTOM.md.
"""

from .generator import BONE, DRAWN_FAMILIES, FAMILIES, GENERATOR_VERSION, MATRIX, SIZES, TOOTH, generate
from .writer import OUTPUT_FILES, write

__all__ = ["BONE", "DRAWN_FAMILIES", "FAMILIES", "GENERATOR_VERSION", "MATRIX", "OUTPUT_FILES", "SIZES", "TOOTH",
           "generate", "write"]
