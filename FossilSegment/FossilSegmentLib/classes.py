"""Segment names and colours from a model's class list (config dicts ``{value, name, color}``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class SegmentClass:
    """One non-background class: its label value in the engine's labelmap, name and RGB colour (0..1)."""

    value: int
    name: str
    color: tuple[float, float, float]


def _color(value: Any) -> tuple[float, float, float]:
    if isinstance(value, str) and value.startswith("#") and len(value) == 7:
        return tuple(int(value[i:i + 2], 16) / 255.0 for i in (1, 3, 5))  # type: ignore[return-value]
    if isinstance(value, (list, tuple)) and len(value) >= 3:
        rgb = [float(c) for c in value[:3]]
        scale = 255.0 if max(rgb) > 1.0 else 1.0
        return tuple(c / scale for c in rgb)  # type: ignore[return-value]
    return (0.9, 0.85, 0.8)


def segmentClasses(classes: Iterable[Any]) -> list[SegmentClass]:
    """The non-background classes (value > 0) in label-value order."""
    out = []
    for c in classes:
        get = c.get if isinstance(c, dict) else (lambda k, d=None, c=c: getattr(c, k, d))
        value = int(get("value"))
        if value > 0:
            out.append(SegmentClass(value, str(get("name", f"Label {value}")), _color(get("color"))))
    return sorted(out, key=lambda s: s.value)
