#!/usr/bin/env python
"""Benchmark: FossilSegment mesh export against Slicer's own closed-surface export (slicer-core), same run.

Builds an N³ labelmap (an ellipsoid with a cortical shell and a gyroid "trabecular" interior, label 1,
plus a small second segment, label 2), then alternately, ``--repeats`` times:
- FossilSegment: ``build_meshes`` + binary STL per segment (``export_meshes`` without reports), and
  separately the per-mesh reports (volume, area, components, watertight);
- Slicer: labelmap → segmentation node (import, timed apart), closed surface
  (``CreateClosedSurfaceRepresentation``, Slicer defaults: smoothing 0.5, no decimation) and
  ``ExportSegmentsClosedSurfaceRepresentationToFiles`` (STL, LPS).
Prints seconds (best and median), triangles and mesh volumes (vtkMassProperties of the written STLs).
Needs ``slicer-core`` in the same environment. Usage::

    python scripts/bench_mesh_export.py --size 512 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import vtk

from fossilsegment_engine.io.mesh_io import MeshOptions, build_meshes, safe_file_stem, write_mesh
from fossilsegment_engine.io.mesh_report import mesh_report
from fossilsegment_engine.volume import Volume

CLASSES = [{"value": 1, "name": "Bone", "color": [0.89, 0.85, 0.79]}, {"value": 2, "name": "Tooth", "color": [1, 1, .8]}]


def make_labelmap(n: int) -> Volume:
    """Ellipsoid: 4-voxel-scaled shell + gyroid trabeculae inside (label 1); a small box (label 2)."""
    k, j, i = (np.linspace(-1, 1, n, dtype=np.float32)[idx] for idx in np.ogrid[:n, :n, :n])
    r = (k / 0.8) ** 2 + (j / 0.6) ** 2 + (i / 0.9) ** 2
    inside = r < 1.0
    shell = inside & (r > 0.92 ** 2)
    w = np.float32(2 * np.pi * 12)  # about 12 trabecular periods across the volume
    gyroid = np.sin(w * i) * np.cos(w * j) + np.sin(w * j) * np.cos(w * k) + np.sin(w * k) * np.cos(w * i)
    labels = (shell | (inside & (gyroid > 0.6))).astype(np.uint8)
    b = n // 16
    labels[b:2 * b, b:2 * b, b:3 * b] = 2
    return Volume(labels, (0.05, 0.05, 0.07), (-12.0, 8.5, 30.0))


def stl_volume(path: Path) -> tuple[float, int]:
    reader = vtk.vtkSTLReader()
    reader.SetFileName(str(path))
    reader.Update()
    mass = vtk.vtkMassProperties()
    mass.SetInputData(reader.GetOutput())
    mass.Update()
    return mass.GetVolume(), reader.GetOutput().GetNumberOfPolys()


def ours(vol: Volume, folder: Path) -> dict:
    t0 = time.perf_counter()
    meshes = build_meshes(vol, CLASSES, MeshOptions())
    t1 = time.perf_counter()
    for mesh in meshes:
        write_mesh(mesh.polydata, folder / f"{safe_file_stem(mesh.name)}.stl", "stl")
    t2 = time.perf_counter()
    for mesh in meshes:
        mesh_report(mesh.polydata)
    t3 = time.perf_counter()
    return {"mesh": t1 - t0, "write": t2 - t1, "export": t2 - t0, "reports": t3 - t2}


def slicer_export(vol: Volume, folder: Path) -> dict:
    import slicer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))
    from _slicer_fixture import add_labelmap_node, close_scene, make_scene

    scene = make_scene()
    try:
        t0 = time.perf_counter()
        node = add_labelmap_node(scene, vol)
        seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(node, seg)
        assert ok, "labelmap import failed"
        segmentation = seg.GetSegmentation()
        for n in range(segmentation.GetNumberOfSegments()):  # name the segments as ours (label 1, 2)
            segment = segmentation.GetNthSegment(n)
            segment.SetName(CLASSES[segment.GetLabelValue() - 1]["name"])
        t1 = time.perf_counter()
        seg.CreateClosedSurfaceRepresentation()
        t2 = time.perf_counter()
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsClosedSurfaceRepresentationToFiles(
            str(folder), seg, None, "STL", True, 1.0, False)
        assert ok, "Slicer STL export failed"
        t3 = time.perf_counter()
    finally:
        close_scene(scene)
    return {"import": t1 - t0, "surface": t2 - t1, "write": t3 - t2, "export": t3 - t1}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    t = time.perf_counter()
    vol = make_labelmap(args.size)
    print(f"labelmap {vol.shape}, {int((vol.array == 1).sum()):,} bone voxels, built in {time.perf_counter() - t:.1f} s")
    runs: dict[str, list[dict]] = {"fossilsegment": [], "slicer": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name, fn in (("slicer", slicer_export), ("fossilsegment", ours)) if rep % 2 == 0 else (
                    ("fossilsegment", ours), ("slicer", slicer_export)):
                folder = Path(tmp) / f"{name}{rep}"
                folder.mkdir()
                runs[name].append(fn(vol, folder))
                print(f"run {rep + 1} {name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in runs[name][-1].items()),
                      flush=True)
        figures = {}
        for name in runs:
            files = sorted((Path(tmp) / f"{name}0").glob("*.stl"))  # Slicer prefixes the node name
            figures[name] = {c["name"]: stl_volume(p) for p in files for c in CLASSES if p.stem.endswith(c["name"])}
    for name, rs in runs.items():
        exports = [r["export"] for r in rs]
        print(f"{name}: export (surface + STL write) best {min(exports):.2f} s, median {statistics.median(exports):.2f} s")
    best = {n: min(r["export"] for r in rs) for n, rs in runs.items()}
    med = {n: statistics.median(r["export"] for r in rs) for n, rs in runs.items()}
    print(f"ratio FossilSegment / Slicer: best {best['fossilsegment'] / best['slicer']:.3f}, "
          f"median {med['fossilsegment'] / med['slicer']:.3f} (target <= 1.2)")
    print(f"FossilSegment per-mesh reports (not in the ratio): {min(r['reports'] for r in runs['fossilsegment']):.2f} s")
    voxel = float(np.prod(vol.spacing))
    for ours_name, (v_ours, tri_ours) in figures["fossilsegment"].items():
        v_slicer, tri_slicer = figures["slicer"].get(ours_name, (float("nan"), 0))
        value = 1 if ours_name == "Bone" else 2
        print(f"segment {ours_name}: volume ours {v_ours:.2f} mm³, Slicer {v_slicer:.2f} mm³ "
              f"(diff {100 * (v_ours - v_slicer) / v_slicer:+.3f} %), voxels {(vol.array == value).sum() * voxel:.2f} mm³; "
              f"triangles ours {tri_ours:,}, Slicer {tri_slicer:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
