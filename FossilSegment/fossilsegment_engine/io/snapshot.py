"""A 3D picture of meshes rendered offscreen with VTK (EGL/OSMesa when there is no display).

The camera looks from the front (anterior) and a little from the right and above, superior up, with the
meshes filling the frame. :func:`write_snapshot_png` renders in a **child process**: Mesa's software
OpenGL loads its own LLVM, and a process that has loaded it crashes when it later imports ``triton``
(pulled in by ``torch._dynamo``/``torchvision``); a child also turns a VTK abort on a machine without
OpenGL into a logged warning (no PNG) instead of a dead run. Run as ``python -m
fossilsegment_engine.io.snapshot JOB.json`` it renders one job (exit 3: cannot render offscreen here).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import vtk
from vtk.util import numpy_support

from ..atomic import atomic_path, check_can_write
from ..errors import OutputError

log = logging.getLogger(__name__)

#: meshes above this many triangles are simplified (quadric clustering) for the picture only
SNAPSHOT_MAX_TRIANGLES = 1_000_000
_BACKGROUND = (0.12, 0.12, 0.14)
SNAPSHOT_TIMEOUT_S = 600
_CANNOT_RENDER = 3  # child exit code
_CHOICE: list[bool] = []  # cached answer of offscreen_supported()
_CHILD_CHOICE: list[bool] = []  # cached answer of can_render_offscreen()


def _disabled() -> bool:
    return os.environ.get("FOSSILSEGMENT_NO_SNAPSHOT", "") not in ("", "0")


def can_render_offscreen() -> bool:
    """True when a child process can render offscreen (``FOSSILSEGMENT_NO_SNAPSHOT=1`` forces False).

    Safe to call from any process: no OpenGL library is loaded here.
    """
    if _disabled():
        return False
    if not _CHILD_CHOICE:
        code = "import sys; from fossilsegment_engine.io.snapshot import offscreen_supported as s; sys.exit(0 if s() else 3)"
        try:
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=False)
            _CHILD_CHOICE.append(done.returncode == 0)
        except (OSError, subprocess.TimeoutExpired):
            _CHILD_CHOICE.append(False)
    return _CHILD_CHOICE[0]


def offscreen_supported() -> bool:
    """True when VTK can open an offscreen OpenGL context **in this process** (loads OpenGL here).

    Without a display, EGL then OSMesa are tried (through ``VTK_DEFAULT_OPENGL_WINDOW``), which also
    avoids VTK's X-server warning.
    """
    if _disabled():
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
    cluster = vtk.vtkQuadricClustering()  # fast, O(n): fine for a picture
    cluster.SetInputData(polydata)
    cluster.AutoAdjustNumberOfDivisionsOn()
    cluster.SetNumberOfDivisions(*[int((max_triangles / 2) ** (1 / 2) * 0.8)] * 3)
    cluster.Update()
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(cluster.GetOutputPort())
    normals.Update()
    return normals.GetOutput()


def render_snapshot(
    meshes: Sequence[tuple[vtk.vtkPolyData, Sequence[float]]],
    size: tuple[int, int] = (800, 600),
    coordinates: str = "LPS",
    max_triangles: int = SNAPSHOT_MAX_TRIANGLES,
) -> np.ndarray:
    """RGB uint8 array (height, width, 3) of ``(polydata, colour 0–1)`` pairs seen from the front.

    Renders in this process: call :func:`offscreen_supported` first (VTK may abort without OpenGL), and
    see the module notes before using it in a process that will import torch (use :func:`write_snapshot_png`).
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
    """Render ``meshes`` in a child process and write the PNG atomically.

    Returns None, with a logged warning and no file, when offscreen rendering is unavailable or fails.
    """
    path = Path(path)
    check_can_write(path, force)
    if not meshes:
        raise OutputError(f"no mesh to render into {path}")
    if _disabled():
        log.warning("3D snapshot skipped (FOSSILSEGMENT_NO_SNAPSHOT is set); %s not written", path)
        return None
    try:
        with tempfile.TemporaryDirectory(prefix="fossilsegment-snapshot-") as tmp, atomic_path(path, force) as out:
            job = {"png": str(out), "size": [int(size[0]), int(size[1])], "coordinates": coordinates, "meshes": []}
            for n, (polydata, color) in enumerate(meshes):
                mesh_path = Path(tmp) / f"mesh{n}.vtp"
                writer = vtk.vtkXMLPolyDataWriter()
                writer.SetInputData(_for_picture(polydata, SNAPSHOT_MAX_TRIANGLES))
                writer.SetFileName(str(mesh_path))
                writer.SetDataModeToAppended()
                writer.EncodeAppendedDataOff()
                writer.SetCompressorTypeToNone()
                if not writer.Write():
                    raise OutputError(f"cannot write a temporary mesh for the snapshot in {tmp}")
                job["meshes"].append({"path": str(mesh_path), "color": [float(c) for c in color[:3]]})
            job_path = Path(tmp) / "job.json"
            job_path.write_text(json.dumps(job), encoding="utf-8")
            try:
                done = subprocess.run(_child_command(job_path), capture_output=True, text=True,
                                      timeout=SNAPSHOT_TIMEOUT_S, check=False)
                code, detail = done.returncode, (done.stderr or "").strip().splitlines()[-1:] or [""]
            except (OSError, subprocess.TimeoutExpired) as exc:
                code, detail = -1, [str(exc)]
            if code != 0 or out.stat().st_size == 0:
                reason = ("VTK cannot render offscreen here (no OpenGL/EGL/OSMesa)" if code == _CANNOT_RENDER
                          else f"the renderer failed (exit {code}: {detail[0]})")
                log.warning("3D snapshot skipped: %s; %s not written", reason, path)
                raise _Skip()
    except _Skip:
        return None
    return path


class _Skip(Exception):
    """Internal: leave the atomic block without writing."""


def _child_command(job_path: Path) -> list[str]:
    return [sys.executable, "-m", "fossilsegment_engine.io.snapshot", str(job_path)]


def _render_job(job_path: str) -> int:
    """Child process body: render the job's meshes into its PNG; exit code 3 when OpenGL is unavailable."""
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    if not offscreen_supported():
        return _CANNOT_RENDER
    meshes = []
    for mesh in job["meshes"]:
        reader = vtk.vtkXMLPolyDataReader()
        reader.SetFileName(mesh["path"])
        reader.Update()
        meshes.append((reader.GetOutput(), mesh["color"]))
    rgb = render_snapshot(meshes, tuple(job["size"]), job["coordinates"])
    image = vtk.vtkImageData()
    image.SetDimensions(rgb.shape[1], rgb.shape[0], 1)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(rgb[::-1].reshape(-1, 3).copy(), deep=True))
    writer = vtk.vtkPNGWriter()
    writer.SetInputData(image)
    writer.SetFileName(job["png"])
    writer.Write()
    return 1 if writer.GetErrorCode() else 0


if __name__ == "__main__":
    sys.exit(_render_job(sys.argv[1]))
