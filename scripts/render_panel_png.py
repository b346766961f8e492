#!/usr/bin/env python
"""Render the module panel (FossilSegment/Resources/UI/FossilSegment.ui) to a PNG for the README.

    pip install PySide6-Essentials   # not a FossilSegment dependency; any venv
    QT_QPA_PLATFORM=offscreen python scripts/render_panel_png.py docs/panel.png

Slicer's own widgets are drawn as stand-ins: qMRMLNodeComboBox as a combo box showing a node name,
ctkCollapsibleButton as a titled group box, qMRMLWidget as a plain widget.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import Property, QFile
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import QApplication, QComboBox, QGroupBox, QWidget

UI = Path(__file__).resolve().parents[1] / "FossilSegment" / "Resources" / "UI" / "FossilSegment.ui"


class qMRMLNodeComboBox(QComboBox):  # noqa: N801 (Slicer's class name)
    """Stand-in: shows a plausible node name."""

    NAMES = {"inputSelector": "FossilDemoPhantom", "outputSelector": "Create new segmentation"}

    def show_node(self) -> None:
        """Show the node the combo would hold (after QUiLoader has named it)."""
        self.clear()
        self.addItem(self.NAMES.get(self.objectName(), "None"))


class ctkCollapsibleButton(QGroupBox):  # noqa: N801
    """Stand-in: a group box whose title is the button text."""

    def _get_text(self) -> str:
        return self.title()

    def _set_text(self, text: str) -> None:
        self.setTitle("▼ " + text)

    text = Property(str, _get_text, _set_text)


class qMRMLWidget(QWidget):  # noqa: N801
    pass


def main(out: str) -> int:
    app = QApplication.instance() or QApplication(sys.argv)
    loader = QUiLoader()
    for cls in (qMRMLNodeComboBox, ctkCollapsibleButton, qMRMLWidget):
        loader.registerCustomWidget(cls)
    f = QFile(str(UI))
    f.open(QFile.ReadOnly)
    panel = loader.load(f)
    f.close()
    # what the widget fills in at run time
    for combo in panel.findChildren(qMRMLNodeComboBox):
        combo.show_node()
    panel.findChild(QComboBox, "modelComboBox").addItem("fossil-bone-v2.1 (default)")
    panel.findChild(QComboBox, "deviceComboBox").addItem("auto (GPU if available)")
    panel.findChild(QWidget, "installButton").setVisible(False)
    panel.findChild(QWidget, "applyButton").setEnabled(True)
    panel.resize(420, panel.sizeHint().height())
    panel.show()
    app.processEvents()
    panel.grab().save(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/panel.png"))
