"""``ModelConfig``: everything needed to rebuild and use a model, stored as ``config.json`` beside its weights."""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ..atomic import atomic_path
from ..errors import ModelError
from ..inference.normalize import DEFAULT_NORMALIZATION
from .archs import DEFAULT_ARCH, architecture

FORMAT = "fossilsegment-model"
#: 2: the architecture's keyword arguments under ``arch_options``; 1 (still read): flat fields
FORMAT_VERSION = 2
#: version 1's flat architecture fields, with their version-1 defaults
V1_ARCH = "deeplabv3plus"
V1_ARCH_FIELDS = {"encoder": "tu-mobilenetv1_100", "encoder_depth": 5, "decoder_skips": 2, "aspp_concat": False,
                  "decoder_channels": None}
CONTEXT_SLICES = (1, 3, 5)

BACKGROUND = {"value": 0, "name": "Background", "color": [0.0, 0.0, 0.0]}
BONE = {"value": 1, "name": "Bone", "color": [0.89, 0.85, 0.79]}
TOOTH = {"value": 2, "name": "Tooth", "color": [1.0, 1.0, 0.9]}


def default_classes(tooth: bool = False) -> list[dict[str, Any]]:
    """[Background, Bone] (+ Tooth with value 2 when ``tooth``), as fresh copies."""
    return copy.deepcopy([BACKGROUND, BONE, TOOTH] if tooth else [BACKGROUND, BONE])


@dataclass
class ModelConfig:
    """A model's architecture, classes, preprocessing, tiling and provenance (``config.json``).

    ``arch`` names an entry of :data:`.archs.ARCHITECTURES`; ``arch_options`` are its keyword arguments
    (completed with the entry's defaults on construction). ``classes[i]`` is output channel ``i`` and label
    value ``i``: values run 0, 1, … n-1 and value 0 is "Background".
    """

    name: str
    arch: str = DEFAULT_ARCH
    arch_options: dict[str, Any] = field(default_factory=dict)
    context_slices: int = 1
    classes: list[dict[str, Any]] = field(default_factory=default_classes)
    normalization: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    tile_size: int = 512
    tile_overlap: int = 64
    provenance: dict[str, Any] = field(default_factory=dict)
    weights_file: str = "model.safetensors"
    weights_sha256: str | None = None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.arch_options = architecture(self.arch).resolve(self.arch_options)
        self.validate()

    # ------------------------------------------------------------------ derived
    @property
    def n_classes(self) -> int:
        """Number of output channels (classes including background)."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Number of input channels (neighbouring axial slices)."""
        return self.context_slices

    @property
    def class_names(self) -> list[str]:
        """Class names in label-value order."""
        return [c["name"] for c in self.classes]

    def describe_architecture(self) -> str:
        """``arch(option=value, …)``, for messages and reports."""
        return architecture(self.arch).describe(self.arch_options)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (deep copy), ``format`` and ``format_version`` first."""
        d = asdict(self)
        head = {"format": d.pop("format"), "format_version": d.pop("format_version")}
        return {**head, **d}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        """Build and validate a config (version 2, or version 1's flat architecture fields); any problem →
        ``ModelError`` naming the field. Without ``format_version``, ``arch_options`` marks version 2."""
        if not isinstance(data, Mapping):
            raise ModelError(f"model config must be a JSON object, got {type(data).__name__}")
        version = data.get("format_version", FORMAT_VERSION if "arch_options" in data else 1)
        known = {f.name for f in fields(cls)}
        if version == 1:
            known = (known - {"arch_options"}) | set(V1_ARCH_FIELDS)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"model config: unknown field(s) {', '.join(unknown)}")
        fmt = data.get("format", FORMAT)
        if fmt != FORMAT:
            raise ModelError(f"model config: format must be {FORMAT!r}, got {fmt!r}")
        if not _is_int(version) or version < 1:
            raise ModelError(f"model config: format_version must be a positive integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise ModelError(
                f"model config: format_version {version} is newer than this FossilSegment supports "
                f"({FORMAT_VERSION}); update FossilSegment"
            )
        if "name" not in data:
            raise ModelError("model config: missing field name")
        kwargs = copy.deepcopy(dict(data))
        if version == 1:
            kwargs = _from_version1(kwargs)
        if "normalization" in kwargs and isinstance(kwargs["normalization"], Mapping):
            kwargs["normalization"] = {**DEFAULT_NORMALIZATION, **kwargs["normalization"]}
        return cls(**kwargs)

    def save(self, path: Path | str, force: bool = False) -> Path:
        """Write ``config.json`` atomically (refuses an existing file unless ``force``)."""
        self.validate()
        path = Path(path)
        with atomic_path(path, force=force) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path | str) -> "ModelConfig":
        """Read and validate a ``config.json``; missing/unreadable/invalid → ``ModelError`` naming the file."""
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model config not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read model config {path}: {exc}") from exc
        try:
            return cls.from_dict(data)
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from exc

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check every field; the first problem → ``ModelError`` naming the field."""
        _check(self.format == FORMAT, "format", f"must be {FORMAT!r}, got {self.format!r}")
        _check(_is_int(self.format_version) and self.format_version == FORMAT_VERSION, "format_version",
               f"must be {FORMAT_VERSION}, got {self.format_version!r}")
        _check(isinstance(self.name, str) and self.name.strip() != "", "name",
               f"must be a non-empty string, got {self.name!r}")
        entry = architecture(self.arch)
        _check(isinstance(self.arch_options, dict) and set(self.arch_options) == set(entry.defaults()),
               "arch_options", f"must hold every option of {self.arch}, got {self.arch_options!r}")
        entry.resolve(self.arch_options)
        _check(_is_int(self.context_slices) and self.context_slices in CONTEXT_SLICES, "context_slices",
               f"must be 1, 3 or 5, got {self.context_slices!r}")
        _validate_classes(self.classes)
        _validate_normalization(self.normalization)
        _check(_is_int(self.tile_size) and self.tile_size >= 32 and self.tile_size % 32 == 0, "tile_size",
               f"must be a positive multiple of 32, got {self.tile_size!r}")
        _check(_is_int(self.tile_overlap) and 0 <= self.tile_overlap < self.tile_size // 2, "tile_overlap",
               f"must be an integer in [0, tile_size/2), got {self.tile_overlap!r}")
        _check(isinstance(self.provenance, dict), "provenance",
               f"must be an object, got {type(self.provenance).__name__}")
        try:
            json.dumps(self.provenance)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"model config: provenance is not JSON-serialisable: {exc}") from exc
        _check(isinstance(self.weights_file, str) and re.fullmatch(r"[\w.\-]+\.safetensors", self.weights_file)
               is not None and not self.weights_file.startswith("."), "weights_file",
               f"must be a plain file name ending in .safetensors, got {self.weights_file!r}")
        _check(self.weights_sha256 is None or (isinstance(self.weights_sha256, str)
               and re.fullmatch(r"[0-9a-f]{64}", self.weights_sha256) is not None), "weights_sha256",
               f"must be 64 lowercase hex digits or null, got {self.weights_sha256!r}")


def _from_version1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1's flat architecture fields (defaults as version 1 had them) → ``arch`` + ``arch_options``."""
    flat = {k: data.pop(k, default) for k, default in V1_ARCH_FIELDS.items()}
    data.setdefault("arch", V1_ARCH)
    data["arch_options"] = architecture(data["arch"]).from_v1(flat)
    data["format_version"] = FORMAT_VERSION
    return data


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ModelError(f"model config: {name} {message}")


def _validate_classes(classes: Any) -> None:
    _check(isinstance(classes, list) and len(classes) >= 2, "classes",
           "must be a list of at least 2 classes (Background and one more)")
    seen_names: set[str] = set()
    for i, c in enumerate(classes):
        where = f"classes[{i}]"
        _check(isinstance(c, dict), where, "must be an object with value, name, color")
        extra = sorted(set(c) - {"value", "name", "color"})
        _check(not extra, where, f"has unknown key(s) {', '.join(extra)}")
        _check(_is_int(c.get("value")) and c["value"] == i, f"{where}.value",
               f"must be {i} (class values run 0, 1, … in order), got {c.get('value')!r}")
        _check(isinstance(c.get("name"), str) and c["name"].strip() != "", f"{where}.name",
               f"must be a non-empty string, got {c.get('name')!r}")
        _check(c["name"] not in seen_names, f"{where}.name", f"duplicates {c['name']!r}")
        seen_names.add(c["name"])
        color = c.get("color")
        _check(isinstance(color, list) and len(color) == 3 and all(_is_number(v) and 0.0 <= v <= 1.0 for v in color),
               f"{where}.color", f"must be 3 numbers in [0, 1], got {color!r}")
    _check(classes[0]["name"] == "Background", "classes[0].name", f"must be 'Background', got {classes[0]['name']!r}")
    _check(len(classes) <= 255, "classes", "must have at most 255 entries")


def _validate_normalization(norm: Any) -> None:
    _check(isinstance(norm, dict), "normalization", "must be an object")
    extra = sorted(set(norm) - set(DEFAULT_NORMALIZATION))
    _check(not extra, "normalization", f"has unknown key(s) {', '.join(extra)}")
    _check(norm.get("method") == "percentile", "normalization.method",
           f"must be 'percentile', got {norm.get('method')!r}")
    lo, hi = norm.get("low_percentile"), norm.get("high_percentile")
    _check(_is_number(lo) and _is_number(hi) and 0.0 <= lo < hi <= 100.0, "normalization",
           f"needs 0 <= low_percentile < high_percentile <= 100, got {lo!r}, {hi!r}")
