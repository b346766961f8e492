"""Python packages the engine needs inside Slicer: checked cheaply, installed only when the user asks."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import sys

#: import name → pip requirement. SimpleITK, numpy, scipy and VTK ship with Slicer.
REQUIREMENTS = {
    "torch": "torch",
    "segmentation_models_pytorch": "segmentation-models-pytorch==0.6.0",
    "safetensors": "safetensors",
    "tifffile": "tifffile",
    "slicerio": "slicerio",
    "nrrd": "pynrrd",
    "skimage": "scikit-image",  # Learn from corrections: image features
    "sklearn": "scikit-learn",  # Learn from corrections: the per-specimen classifier
}


#: segmentation-models-pytorch 0.6 needs Python 3.10+: Slicer 5.10 (Python 3.12) is the first that has it
MINIMUM_PYTHON = (3, 10)
MINIMUM_SLICER = "5.10"


def unsupportedReason(version: tuple = tuple(sys.version_info[:2])) -> str | None:
    """Why this Slicer cannot run the engine (its Python is too old), or None."""
    if tuple(version[:2]) < MINIMUM_PYTHON:
        return (f"FossilSegment needs Slicer {MINIMUM_SLICER} or later (Python "
                f"{'.'.join(map(str, MINIMUM_PYTHON))}+); this Slicer has Python {'.'.join(map(str, version[:2]))}.")
    return None


def missingPackages() -> list[str]:
    """Import names of required packages that cannot be found (nothing is imported)."""
    return [name for name in REQUIREMENTS if importlib.util.find_spec(name) is None]


def installMissing(requester: str = "FossilSegment") -> list[str]:
    """Install what is missing; return what was requested. Call on the main thread after asking the user
    once: no further confirmation is asked here.

    PyTorch comes first, through the PyTorch extension (it picks the build for the computer's GPU driver)
    when that extension is installed, else through pip. The other packages go through ``pip_ensure``
    (Slicer 5.12+, without its own prompt) or ``slicer.util.pip_install``.
    """
    import slicer

    reason = unsupportedReason()
    if reason:
        raise RuntimeError(reason)
    missing = missingPackages()
    if "torch" in missing:
        _installTorch()
    others = [REQUIREMENTS[name] for name in missing if name != "torch"]
    if others:
        ensure = _pipEnsure()
        if ensure is not None:
            from packaging.requirements import Requirement

            ensure([Requirement(r) for r in others], prompt_install=False, requester=requester)
        else:
            slicer.util.pip_install(" ".join(others))
    importlib.invalidate_caches()
    still = missingPackages()
    if still:
        raise RuntimeError(f"still missing after installation: {', '.join(still)}")
    return missing


def _pipEnsure():
    """Slicer's ``pip_ensure`` when it exists and can skip its own prompt (5.12+), else None."""
    for name in ("slicer.pydeps", "slicer.packaging"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        ensure = getattr(module, "pip_ensure", None)
        if ensure is not None and "prompt_install" in inspect.signature(ensure).parameters:
            return ensure
    return None


def _installTorch() -> None:
    import slicer

    try:
        import PyTorchUtils
    except ImportError:
        PyTorchUtils = None
    if PyTorchUtils is not None:
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)  # the user was asked once already
        if torch is None:
            raise RuntimeError("PyTorch was not installed (cancelled)")
        return
    logging.info("FossilSegment: PyTorch extension not found; installing torch with pip (CPU or default CUDA build)")
    slicer.util.pip_install("torch torchvision")
