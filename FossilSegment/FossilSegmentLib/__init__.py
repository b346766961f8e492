"""FossilSegment's Slicer module code: logic (MRML only), widget (Qt), parameters, dependencies, self test.

Submodules are imported where used, so the logic can be used without Qt (tests, scripts).
"""
