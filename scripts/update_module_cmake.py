#!/usr/bin/env python
"""Rewrite the file lists in FossilSegment/CMakeLists.txt from the files on disk (run after adding a module file).

Testing/test_extension_layout.py fails when the lists and the files disagree.
"""

import re
from pathlib import Path

MODULE = Path(__file__).resolve().parents[1] / "FossilSegment"


def files() -> tuple[list[str], list[str]]:
    scripts = sorted(p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*.py")
                     if "egg-info" not in str(p) and "__pycache__" not in p.parts)
    resources = sorted(p.relative_to(MODULE).as_posix() for p in (MODULE / "Resources").rglob("*") if p.is_file())
    return scripts, resources


def main() -> None:
    cmake = MODULE / "CMakeLists.txt"
    text = cmake.read_text()
    scripts, resources = files()
    for var, items in (("MODULE_PYTHON_SCRIPTS", scripts), ("MODULE_PYTHON_RESOURCES", resources)):
        body = "".join(f"  {i}\n" for i in items)
        text = re.sub(rf"set\({var}\n.*?\n  \)", f"set({var}\n{body}  )", text, flags=re.S)
    cmake.write_text(text)
    print(f"{cmake}: {len(scripts)} scripts, {len(resources)} resources")


if __name__ == "__main__":
    main()
