"""Where the bundled resources (default model, demo scan) are.

Two layouts are supported: the source tree / editable pip install (``<repo>/Resources``, two folders
above this package) and an installed Slicer extension (``<module dir>/Resources``, one folder above).
``FOSSILSEGMENT_RESOURCES_DIR`` overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import FossilSegmentError

_PACKAGE_DIR = Path(__file__).resolve().parent

#: the bundled demo scan and its ground truth (a synthetic fossil phantom), relative to the resources folder
DEMO_SCAN = Path("SampleData/fossil_demo_phantom.nrrd")
DEMO_LABELS = Path("SampleData/fossil_demo_phantom_labels.nrrd")


def candidate_resource_dirs() -> list[Path]:
    """Resource folders to look in, most specific first."""
    dirs = []
    if os.environ.get("FOSSILSEGMENT_RESOURCES_DIR"):
        dirs.append(Path(os.environ["FOSSILSEGMENT_RESOURCES_DIR"]))
    dirs += [_PACKAGE_DIR.parent.parent / "Resources", _PACKAGE_DIR.parent / "Resources"]
    return dirs


def resource_path(relative: str | Path) -> Path:
    """The first existing ``<resources>/<relative>``; a clear error naming where it looked otherwise."""
    for base in candidate_resource_dirs():
        path = base / relative
        if path.exists():
            return path
    looked = ", ".join(str(d) for d in candidate_resource_dirs())
    raise FossilSegmentError(f"bundled resource {relative} not found (looked in: {looked})")
