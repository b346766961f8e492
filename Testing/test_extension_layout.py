"""Static checks of the Slicer extension layout: CMake lists every module file, the engine stays Slicer-free."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "FossilSegment"
ENGINE = MODULE / "fossilsegment_engine"


def _cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not set"
    return [line.strip() for line in match.group(1).split() if line.strip() and not line.startswith("#")]


def test_extension_cmake_metadata() -> None:
    text = (ROOT / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(rf"set\({key} \"[^\"]+\"\)", text), key
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert "add_subdirectory(FossilSegment)" in text


def test_module_cmake_lists_every_module_file() -> None:
    text = (MODULE / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule" in text
    scripts = set(_cmake_list(text, "MODULE_PYTHON_SCRIPTS"))
    resources = set(_cmake_list(text, "MODULE_PYTHON_RESOURCES"))
    on_disk = {p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*.py")
               if "egg-info" not in str(p) and "__pycache__" not in p.parts and p.parts[-2] != "Testing"
               and "Testing" not in p.relative_to(MODULE).parts}
    assert on_disk - scripts == set(), "module files missing from MODULE_PYTHON_SCRIPTS"
    assert {s for s in scripts if not (MODULE / s).is_file()} == set(), "listed scripts that do not exist"
    resource_files = {p.relative_to(MODULE).as_posix() for p in (MODULE / "Resources").rglob("*") if p.is_file()}
    assert resource_files - resources == set(), "resources missing from MODULE_PYTHON_RESOURCES"
    assert {r for r in resources if not (MODULE / r).is_file()} == set()
    assert "slicer_add_python_unittest" in text


def test_module_file_is_thin() -> None:
    assert len((MODULE / "FossilSegment.py").read_text().splitlines()) <= 120
