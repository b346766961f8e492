"""Python packages the engine needs inside Slicer: checked cheaply, installed only when the user asks."""

from __future__ import annotations

import importlib
import importlib.util
import logging

#: import name → pip requirement. SimpleITK, numpy, scipy and VTK ship with Slicer.
REQUIREMENTS = {
    "torch": "torch",
    "segmentation_models_pytorch": "segmentation-models-pytorch==0.6.0",
    "safetensors": "safetensors",
    "tifffile": "tifffile",
    "slicerio": "slicerio",
    "nrrd": "pynrrd",
}


def missingPackages() -> list[str]:
    """Import names of required packages that cannot be found (nothing is imported)."""
    return [name for name in REQUIREMENTS if importlib.util.find_spec(name) is None]


def installMissing(requester: str = "FossilSegment") -> list[str]:
    """Install what is missing; return what was requested. Call on the main thread after asking the user.

    PyTorch comes first, through the PyTorch extension (it picks the build for the computer's GPU driver)
    when that extension is installed, else through pip. The other packages go through
    ``slicer.packaging.pip_ensure`` (recent Slicer versions) or ``slicer.util.pip_install``.
    """
    import slicer

    missing = missingPackages()
    if "torch" in missing:
        _installTorch()
    others = [REQUIREMENTS[name] for name in missing if name != "torch"]
    if others:
        try:
            import slicer.packaging as packaging
        except ImportError:
            packaging = None
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            packaging.pip_ensure(others, requester=requester)
        else:
            slicer.util.pip_install(" ".join(others))
    importlib.invalidate_caches()
    still = missingPackages()
    if still:
        raise RuntimeError(f"still missing after installation: {', '.join(still)}")
    return missing


def _installTorch() -> None:
    import slicer

    try:
        import PyTorchUtils
    except ImportError:
        PyTorchUtils = None
    if PyTorchUtils is not None:
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True)
        if torch is None:
            raise RuntimeError("PyTorch was not installed (cancelled)")
        return
    logging.info("FossilSegment: PyTorch extension not found; installing torch with pip (CPU or default CUDA build)")
    slicer.util.pip_install("torch torchvision")
