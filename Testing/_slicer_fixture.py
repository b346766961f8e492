"""A real MRML scene wired like the Slicer app, for tests that run on the ``slicer-core`` wheel.

Use through the pytest fixture it defines::

    from _slicer_fixture import scene  # noqa: F401  (a fixture: each test using it gets a fresh scene)

The Colors, Volumes and Segmentations logics get the scene and one application logic, are
registered under their module names, and ``slicer.mrmlScene`` points at the scene (as in the app).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

#: logic options that keep a test's segmentation cheap (no clean-up, CPU)
FAST = dict(minIslandVoxels=0, fillHoles=False, device="cpu")
#: an IJK-to-RAS with a turned, anisotropic grid (no axis of the volume along a world axis)
OBLIQUE = np.array([[0.0, -0.6, 0.0, 10.0], [0.7, 0.0, 0.0, -5.0], [0.0, 0.0, 1.5, 3.0], [0, 0, 0, 1.0]])


def make_scene() -> Any:
    """Create the scene and logics; return the scene (also set as ``slicer.mrmlScene``)."""
    import slicer

    scene = slicer.vtkMRMLScene()
    appLogic = slicer.vtkSlicerApplicationLogic()
    appLogic.SetMRMLScene(scene)
    logics = {
        "Colors": slicer.vtkSlicerColorLogic(),
        "Volumes": slicer.vtkSlicerVolumesLogic(),
        "Segmentations": slicer.vtkSlicerSegmentationsModuleLogic(),
    }
    for name, logic in logics.items():
        logic.SetMRMLApplicationLogic(appLogic)
        logic.SetMRMLScene(scene)
        appLogic.SetModuleLogic(name, logic)
    import vtk

    shown = vtk.vtkObject.GetGlobalWarningDisplay()
    vtk.vtkObject.GlobalWarningDisplayOff()  # "HomeDirectory is not set": no color files outside the app
    try:
        logics["Colors"].AddDefaultColorNodes()
    finally:
        vtk.vtkObject.SetGlobalWarningDisplay(shown)
    slicer.mrmlScene = scene
    # Keep the logics alive as long as the scene.
    scene._fossilsegment_keepalive = (appLogic, logics)  # type: ignore[attr-defined]
    return scene


def close_scene(scene: Any) -> None:
    """Clear the scene and unset ``slicer.mrmlScene``."""
    import slicer

    scene.Clear(1)
    if getattr(slicer, "mrmlScene", None) is scene:
        slicer.mrmlScene = None


def add_labelmap_node(scene: Any, volume: Any) -> Any:
    """A vtkMRMLLabelMapVolumeNode holding an engine ``Volume`` (LPS geometry → the node's IJK-to-RAS)."""
    import numpy as np
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.ijk_to_lps()
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ras))
    slicer.util.updateVolumeFromArray(node, volume.array)
    return node


@pytest.fixture
def scene() -> Any:
    """A fresh scene for one test (:func:`make_scene`), closed afterwards."""
    s = make_scene()
    yield s
    close_scene(s)
