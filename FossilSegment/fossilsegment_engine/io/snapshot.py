"""A 3D picture of meshes rendered offscreen with VTK (EGL/OSMesa when there is no display).

The camera looks from the front (anterior) and a little from the right and above, superior up, with the
meshes filling the frame. When this VTK cannot render offscreen (no OpenGL), :func:`write_snapshot_png`
logs a warning and returns None instead of failing the run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import vtk
from vtk.util import numpy_support

from ..atomic import atomic_path, check_can_write
from ..errors import OutputError

log = logging.getLogger(__name__)

#: meshes above this many triangles are decimated (quadric) for the picture only
SNAPSHOT_MAX_TRIANGLES = 1_000_000
_BACKGROUND = (0.12, 0.12, 0.14)


_CHOICE: list[bool] = []  # cached answer of can_render_offscreen()


def can_render_offscreen() -> bool:
    """True when VTK can open an offscreen OpenGL context (``FOSSILSEGMENT_NO_SNAPSHOT=1`` forces False).

    Without a display, EGL then OSMesa are tried (through ``VTK_DEFAULT_OPENGL_WINDOW``), which also
    avoids VTK's X-server warning.
    """
    if os.environ.get("FOSSILSEGMENT_NO_SNAPSHOT", "") not in ("", "0"):
        return False
    if _CHOICE:
        return _CHOICE[0]
    headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    candidates = [os.environ.get("VTK_DEFAULT_OPENGL_WINDOW", "")]
    if headless and not candidates[0]:
        candidates = ["vtkEGLRenderWindow", "vtkOSOpenGLRenderWindow"]
    for name in candidates:
        if name:
            os.environ["VTK_DEFAULT_OPENGL_WINDOW"] = name
        window = vtk.vtkRenderWindow()
        window.SetOffScreenRendering(1)
        try:
            ok = bool(window.SupportsOpenGL())
        finally:
            window.Finalize()
        if ok:
            _CHOICE.append(True)
            return True
    _CHOICE.append(False)
    return False


def _for_picture(polydata: vtk.vtkPolyData, max_triangles: int) -> vtk.vtkPolyData:
    n = polydata.GetNumberOfPolys()
    if n <= max_triangles:
        return polydata
    decimate = vtk.vtkQuadricDecimation()
    decimate.SetInputData(polydata)
    decimate.SetTargetReduction(1.0 - max_triangles / n)
    decimate.Update()
    return decimate.GetOutput()


def render_snapshot(
    meshes: Sequence[tuple[vtk.vtkPolyData, Sequence[float]]],
    size: tuple[int, int] = (800, 600),
    coordinates: str = "LPS",
    max_triangles: int = SNAPSHOT_MAX_TRIANGLES,
) -> np.ndarray:
    """RGB uint8 array (height, width, 3) of ``(polydata, colour 0–1)`` pairs seen from the front.

    Call :func:`can_render_offscreen` first: VTK may abort the process when no OpenGL is available.
    """
    width, height = int(size[0]), int(size[1])
    if width < 16 or height < 16:
        raise OutputError(f"snapshot size must be at least 16×16 pixels, got {width}×{height}")
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(*_BACKGROUND)
    for polydata, color in meshes:
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputData(_for_picture(polydata, max_triangles))
        mapper.ScalarVisibilityOff()
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(*[float(c) for c in color[:3]])
        actor.GetProperty().SetSpecular(0.2)
        renderer.AddActor(actor)
    renderer.ResetCamera()
    camera = renderer.GetActiveCamera()
    centre = np.array(camera.GetFocalPoint())
    distance = camera.GetDistance()
    anterior = np.array([0.0, -1.0 if coordinates.upper() == "LPS" else 1.0, 0.0])
    camera.SetPosition(*(centre + distance * anterior))
    camera.SetViewUp(0.0, 0.0, 1.0)
    camera.Azimuth(30)
    camera.Elevation(20)
    camera.OrthogonalizeViewUp()
    renderer.ResetCamera()
    camera.Zoom(1.3)
    renderer.ResetCameraClippingRange()
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(width, height)
    window.AddRenderer(renderer)
    try:
        window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(window)
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.Update()
        image = grab.GetOutput()
        w, h, _ = image.GetDimensions()
        rgb = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, -1)[..., :3]
        return np.ascontiguousarray(rgb[::-1])  # VTK rows run bottom-up
    finally:
        window.Finalize()


def write_snapshot_png(
    meshes: Sequence[tuple[vtk.vtkPolyData, Sequence[float]]],
    path: Path | str,
    size: tuple[int, int] = (800, 600),
    coordinates: str = "LPS",
    force: bool = False,
) -> Path | None:
    """Render ``meshes`` and write the PNG atomically; None (with a logged warning) when rendering is unavailable."""
    path = Path(path)
    check_can_write(path, force)
    if not meshes:
        raise OutputError(f"no mesh to render into {path}")
    if not can_render_offscreen():
        log.warning("3D snapshot skipped: VTK cannot render offscreen here (no OpenGL/EGL/OSMesa); "
                    "%s not written", path)
        return None
    rgb = render_snapshot(meshes, size, coordinates)
    image = vtk.vtkImageData()
    image.SetDimensions(rgb.shape[1], rgb.shape[0], 1)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(rgb[::-1].reshape(-1, 3).copy(), deep=True))
    with atomic_path(path, force) as tmp:
        writer = vtk.vtkPNGWriter()
        writer.SetInputData(image)
        writer.SetFileName(str(tmp))
        writer.Write()
        if writer.GetErrorCode():
            raise OutputError(f"cannot write {path}: VTK PNG writer error {writer.GetErrorCode()}")
    return path
