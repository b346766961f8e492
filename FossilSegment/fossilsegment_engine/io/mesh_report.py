"""Quality figures of a triangle mesh: volume, area, pieces, and whether it is watertight.

``volume_mm3`` (vtkMassProperties, divergence theorem) is meaningful for closed meshes only;
``watertight`` means no boundary edge (every edge shared by two triangles) and no non-manifold edge
(no edge shared by more than two triangles).
"""

from __future__ import annotations

from typing import Any

import vtk


def _edge_count(polydata: vtk.vtkPolyData, boundary: bool) -> int:
    edges = vtk.vtkFeatureEdges()
    edges.SetInputData(polydata)
    edges.FeatureEdgesOff()
    edges.ManifoldEdgesOff()
    edges.SetBoundaryEdges(boundary)
    edges.SetNonManifoldEdges(not boundary)
    edges.ColoringOff()
    edges.Update()
    return int(edges.GetOutput().GetNumberOfCells())


def connected_components(polydata: vtk.vtkPolyData) -> int:
    """Number of separate pieces (triangles connected through shared points)."""
    if polydata.GetNumberOfPolys() == 0:
        return 0
    connectivity = vtk.vtkPolyDataConnectivityFilter()
    connectivity.SetInputData(polydata)
    connectivity.SetExtractionModeToAllRegions()
    connectivity.ColorRegionsOff()
    connectivity.Update()
    return int(connectivity.GetNumberOfExtractedRegions())


def mesh_report(polydata: vtk.vtkPolyData) -> dict[str, Any]:
    """``{triangles, points, volume_mm3, surface_area_mm2, connected_components, boundary_edges,
    non_manifold_edges, watertight}`` of a triangle mesh in millimetres."""
    triangles = int(polydata.GetNumberOfPolys())
    volume = area = 0.0
    if triangles:
        mass = vtk.vtkMassProperties()
        mass.SetInputData(polydata)
        mass.Update()
        volume, area = float(mass.GetVolume()), float(mass.GetSurfaceArea())
    boundary = _edge_count(polydata, boundary=True) if triangles else 0
    non_manifold = _edge_count(polydata, boundary=False) if triangles else 0
    return {
        "triangles": triangles,
        "points": int(polydata.GetNumberOfPoints()),
        "volume_mm3": volume,
        "surface_area_mm2": area,
        "connected_components": connected_components(polydata),
        "boundary_edges": boundary,
        "non_manifold_edges": non_manifold,
        "watertight": bool(triangles) and boundary == 0 and non_manifold == 0,
    }
