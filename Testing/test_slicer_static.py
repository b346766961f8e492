"""Static checks of the Slicer module files (the parts that only run inside the Slicer app)."""

from __future__ import annotations

import ast
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "FossilSegment"
LIB = MODULE / "FossilSegmentLib"
UI = MODULE / "Resources" / "UI" / "FossilSegment.ui"
ICON = MODULE / "Resources" / "Icons" / "FossilSegment.png"
ENGINE = MODULE / "fossilsegment_engine"
QT_MODULES = {"qt", "ctk", "PythonQt", "qSlicerSegmentationsModuleWidgetsPythonQt"}
QT_BUILTIN = {"QWidget", "QLabel", "QPushButton", "QComboBox", "QSpinBox", "QCheckBox", "QProgressBar",
              "QListWidget", "QDoubleSpinBox"}


def ui_tree() -> ET.Element:
    return ET.parse(UI).getroot()


def ui_widgets() -> dict[str, str]:
    """name → class of every widget in the .ui."""
    return {w.get("name"): w.get("class") for w in ui_tree().iter("widget")}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module imported anywhere in a file (also inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_ui_is_valid_and_declares_custom_widgets():
    root = ui_tree()
    assert root.tag == "ui"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "FossilSegment"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = set(ui_widgets().values())
    custom = {c for c in used if c not in QT_BUILTIN}
    assert custom <= declared, f"undeclared custom widgets: {custom - declared}"
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "duplicate widget names"
    texts = {w.get("name"): w.findtext("property[@name='text']/string") for w in root.iter("widget")}
    assert texts["autoSegmentCollapsibleButton"] == "Auto-segment fossil"
    # every MRML selector gets the scene from the top widget
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    assert receivers == {n for n, c in ui_widgets().items() if c == "qMRMLNodeComboBox"}


@pytest.mark.parametrize("source", ["widget.py", "tests.py"])
def test_every_ui_name_used_exists(source):
    text = (LIB / source).read_text(encoding="utf-8")
    used = set(re.findall(r"\bui\.(\w+)", text))
    assert used, "no ui names found: the pattern is wrong"
    missing = used - set(ui_widgets())
    assert not missing, f"{source} uses widgets missing from FossilSegment.ui: {sorted(missing)}"


def test_parameter_names_in_ui_are_parameter_fields():
    tree = ast.parse((LIB / "parameters.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FossilSegmentParameterNode")
    fields = {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}
    bound = {w.findtext("property[@name='SlicerParameterName']/string") for w in ui_tree().iter("widget")} - {None}
    assert bound, "no widget is bound to the parameter node"
    assert bound <= fields, f"unknown parameters in .ui: {bound - fields}"
    assert {"inputVolume", "outputSegmentation", "roi", "batchSize", "minIslandVoxels", "fillHoles"} <= bound
    assert {"model", "device"} <= fields  # combos filled at run time, synced by the widget


@pytest.mark.parametrize("name", ["logic.py", "geometry.py", "classes.py", "dependencies.py", "__init__.py",
                                  "corrections.py", "job_logic.py", "engine_jobs.py", "process_job.py"])
def test_logic_side_imports_no_qt(name):
    assert not imported_modules(LIB / name) & QT_MODULES


def test_engine_never_imports_slicer_or_qt():
    files = list(ENGINE.rglob("*.py"))
    assert files
    for path in files:
        bad = imported_modules(path) & (QT_MODULES | {"slicer", "vtkSlicerSegmentationsModuleLogicPython"})
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_jobs_run_in_a_process_owned_by_the_logic():
    """The runner imports neither Qt nor Slicer nor VTK; no Python thread runs a job; the widget only polls the
    logic's job (no engine call of its own)."""
    assert not imported_modules(LIB / "process_job.py") & (QT_MODULES | {"slicer", "vtk", "threading"})
    assert not imported_modules(LIB / "engine_jobs.py") & (QT_MODULES | {"slicer", "vtk"})
    widget = (LIB / "widget.py").read_text(encoding="utf-8")
    assert "threading" not in widget and "logic.pollJob()" in widget
    for call in ("runEngine(", "runLearning(", "runUncertainty(", "applyResult(", "getSegmenter("):
        assert call not in widget, call


def test_module_file_is_thin_and_complete():
    path = MODULE / "FossilSegment.py"
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 100
    tree = ast.parse(text)
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes == ["FossilSegment"]
    imported = {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"FossilSegmentWidget", "FossilSegmentLogic", "FossilSegmentTest"} <= imported
    assert '_("FossilSegment")' in text and '"Segmentation")' in text
    assert "10.3389/feart.2021.805271" in text and "805271" in text
    assert "registerCustomSampleDataSource" in text and "fossil_demo_phantom.nrrd" in text
    assert 'connect("startupCompleted()", registerSampleData)' in text
    assert "hashlib" not in text and "read()" not in text  # nothing read or hashed at start-up


def test_minimum_slicer_is_declared_and_python_39_refused():
    from FossilSegmentLib import dependencies

    cmake = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert 'VERSION_LESS "5.10"' in cmake and "5.10" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "Slicer 5.10" in dependencies.unsupportedReason((3, 9))
    assert dependencies.unsupportedReason((3, 10)) is None and dependencies.unsupportedReason((3, 12)) is None


def test_all_module_python_compiles_without_bare_except():
    for path in [MODULE / "FossilSegment.py", *LIB.glob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        compile(tree, str(path), "exec")
        bare = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ExceptHandler) and n.type is None]
        assert not bare, f"{path.name}: bare except at lines {bare}"


def test_icon_is_128_png():
    data = ICON.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (128, 128)


def test_in_slicer_test_is_registered():
    cmake = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in cmake
    module_file = (MODULE / "FossilSegment.py").read_text(encoding="utf-8")
    assert "import FossilSegmentTest" in module_file  # the test class slicer_add_python_unittest runs
