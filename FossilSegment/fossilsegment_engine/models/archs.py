"""The architecture registry: every network type, its options (name, default, check, help) and how to build it.

A model config is ``arch`` + ``arch_options`` (the keyword arguments declared here) + the fields every
architecture shares (classes, context slices, normalisation, tiling). ``config.json``, :mod:`.build`,
:mod:`.store`, training and the ``train`` command read everything from :data:`ARCHITECTURES`; adding an
architecture is one :class:`Architecture` entry there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from typing import TYPE_CHECKING

from ..errors import ModelError

if TYPE_CHECKING:  # torch, smp and timm load in builders only, so the CLI's --help and parsing stay fast
    from torch import nn

#: DeepLab v3+ runs its encoder at output stride 16 (the deepest stage is dilated).
DEEPLAB_OUTPUT_STRIDE = 16
#: smp's U-Net decoder widths, finest last (the first ``encoder_depth`` of them are used).
SMP_UNET_WIDTHS = (256, 128, 64, 32, 16)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _positive_int(x: Any) -> bool:
    return _is_int(x) and x > 0


@dataclass(frozen=True)
class ArchOption:
    """One keyword argument of an architecture, stored in ``config.json`` under ``arch_options``.

    ``check`` tells whether a value is well formed (``expect`` says what is, for the error message);
    ``cli_type`` is the ``train`` flag's type (``bool``: a switch); ``flag`` defaults to ``--name-with-dashes``.
    """

    name: str
    default: Any
    check: Callable[[Any], bool]
    expect: str
    help: str
    cli_type: type = int
    choices: tuple[Any, ...] | None = None
    flag: str | None = None

    @property
    def cli_flag(self) -> str:
        """The ``fossilsegment train`` flag of this option."""
        return self.flag or "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Architecture:
    """A network type: its options, a builder ``build(in_channels, classes, **options)`` and layout rules.

    ``rules(options)`` returns ``(option, problem)`` for a bad combination of options, else None.
    ``multiple(options)``: input height and width must be multiples of this (inference pads to it).
    ``from_v1(fields)``: ``arch_options`` from the flat fields of a version-1 ``config.json``.
    ``unused_parameters(options)``: whether some parameters never take part in the forward pass (DDP must know).
    """

    name: str
    summary: str
    options: tuple[ArchOption, ...]
    build: Callable[..., nn.Module]
    multiple: Callable[[Mapping[str, Any]], int]
    rules: Callable[[Mapping[str, Any]], tuple[str, str] | None]
    from_v1: Callable[[Mapping[str, Any]], dict[str, Any]]
    unused_parameters: Callable[[Mapping[str, Any]], bool]

    def defaults(self) -> dict[str, Any]:
        """Every option at its default, in declaration order."""
        return {o.name: o.default for o in self.options}

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """``given`` completed with defaults and checked; a problem → ``ModelError`` naming the option."""
        if not isinstance(given, Mapping):
            raise ModelError(f"model config: arch_options must be an object, got {type(given).__name__}")
        names = [o.name for o in self.options]
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ModelError(f"model config: arch_options {', '.join(unknown)} not known to {self.name} "
                             f"(its options: {', '.join(names)})")
        resolved = {o.name: given.get(o.name, o.default) for o in self.options}
        for o in self.options:
            if not o.check(resolved[o.name]):
                raise ModelError(f"model config: {o.name} must be {o.expect} for {self.name}, "
                                 f"got {resolved[o.name]!r}")
        problem = self.rules(resolved)
        if problem is not None:
            raise ModelError(f"model config: {problem[0]} {problem[1]}")
        return resolved

    def describe(self, options: Mapping[str, Any]) -> str:
        """``arch(option=value, …)``, for messages and reports."""
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in options.items())})"


# ---------------------------------------------------------------- options shared by smp's encoders
def known_encoder(name: str) -> bool:
    """True if smp can build ``name`` (an smp encoder, or ``tu-<timm model>``)."""
    if name.startswith("tu-"):
        import timm

        return timm.is_model(name[3:])
    import segmentation_models_pytorch as smp

    return name in smp.encoders.get_encoder_names()


def _smp_encoder(name: str) -> str:
    """``name`` if smp knows it, else ``ModelError`` with examples."""
    if not known_encoder(name):
        raise ModelError(f"model config: unknown encoder {name!r} (use an smp encoder name such as 'resnet18', "
                         f"'mobilenet_v2', 'resnet50', or 'tu-<timm model>' such as 'tu-mobilenetv1_100')")
    return name


def _encoder(default: str) -> ArchOption:
    return ArchOption("encoder", default, lambda v: isinstance(v, str) and v != "", "an smp encoder name",
                      "smp encoder, e.g. tu-mobilenetv1_100 (the paper's), mobilenet_v2, resnet18, tu-resnet18",
                      cli_type=str)


ENCODER_DEPTH = ArchOption("encoder_depth", 5, lambda v: _is_int(v) and 3 <= v <= 5, "3, 4 or 5",
                           "encoder stages used", choices=(3, 4, 5))


def _v1_encoder(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {"encoder": fields["encoder"], "encoder_depth": fields["encoder_depth"]}


def smp_unused_parameters(options: Mapping[str, Any]) -> bool:
    """Whether smp keeps encoder stages the forward pass never uses (DDP must then look for unused parameters)."""
    return options["encoder_depth"] < 5 and not options["encoder"].startswith("tu-")


# ---------------------------------------------------------------- U-Net
def unet_widths(options: Mapping[str, Any]) -> list[int]:
    """U-Net decoder widths: the list given, or ``c`` → ``[c·2^(depth-1), …, 2c, c]``."""
    dc, depth = options["decoder_channels"], options["encoder_depth"]
    return list(dc) if isinstance(dc, list) else [dc * 2 ** (depth - 1 - i) for i in range(depth)]


def _build_unet(in_channels: int, classes: int, **options: Any) -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.Unet(encoder_name=_smp_encoder(options["encoder"]), encoder_depth=options["encoder_depth"], encoder_weights=None,
                    decoder_channels=unet_widths(options), in_channels=in_channels, classes=classes)


def _unet_rules(options: Mapping[str, Any]) -> tuple[str, str] | None:
    dc = options["decoder_channels"]
    if isinstance(dc, list) and len(dc) != options["encoder_depth"]:
        return "decoder_channels", f"for unet needs encoder_depth={options['encoder_depth']} widths, got {dc!r}"
    return None


def _unet_from_v1(fields: Mapping[str, Any]) -> dict[str, Any]:
    if fields["decoder_skips"] != 2:
        raise ModelError("model config: decoder_skips applies to deeplabv3plus only (leave it at 2 for unet)")
    if fields["aspp_concat"] is not False:
        raise ModelError("model config: aspp_concat applies to deeplabv3plus only")
    dc = fields["decoder_channels"]
    if dc is None:  # version 1 meant smp's widths
        dc = list(SMP_UNET_WIDTHS[:fields["encoder_depth"]]) if _is_int(fields["encoder_depth"]) else dc
    return {**_v1_encoder(fields), "decoder_channels": dc}


UNET = Architecture(
    name="unet",
    summary="smp U-Net",
    options=(
        _encoder("resnet18"),
        ENCODER_DEPTH,
        ArchOption("decoder_channels", 16,
                   lambda v: _positive_int(v) or (isinstance(v, list) and bool(v) and all(map(_positive_int, v))),
                   "a positive int or a list of encoder_depth positive ints",
                   "decoder widths: c → [c·2^(depth-1), …, 2c, c] (16 = smp's widths at depth 5)"),
    ),
    build=_build_unet,
    multiple=lambda o: 2 ** o["encoder_depth"],
    rules=_unet_rules,
    from_v1=_unet_from_v1,
    unused_parameters=smp_unused_parameters,
)


# ---------------------------------------------------------------- DeepLab v3+ (the paper's, 1 or 2 skips)
def _build_deeplab(in_channels: int, classes: int, **options: Any) -> nn.Module:
    from .deeplabv3plus import FossilDeepLabV3Plus

    return FossilDeepLabV3Plus(encoder_name=_smp_encoder(options["encoder"]), encoder_depth=options["encoder_depth"],
                               encoder_weights=None, decoder_channels=options["decoder_channels"],
                               in_channels=in_channels, classes=classes, decoder_skips=options["decoder_skips"],
                               aspp_concat=options["aspp_concat"])


def _deeplab_rules(options: Mapping[str, Any]) -> tuple[str, str] | None:
    if options["decoder_skips"] == 2 and options["encoder_depth"] < 4:
        return "encoder_depth", "must be 4 or 5 for two decoder skips"
    return None


def _deeplab_from_v1(fields: Mapping[str, Any]) -> dict[str, Any]:
    dc = fields["decoder_channels"]
    return {**_v1_encoder(fields), "decoder_channels": 256 if dc is None else dc,
            "decoder_skips": fields["decoder_skips"], "aspp_concat": fields["aspp_concat"]}


DEEPLABV3PLUS = Architecture(
    name="deeplabv3plus",
    summary="DeepLab v3+ with one or two decoder skips (Yu et al. 2022), output stride 16",
    options=(
        _encoder("tu-mobilenetv1_100"),
        ENCODER_DEPTH,
        ArchOption("decoder_channels", 256, _positive_int, "a positive int", "ASPP and decoder width"),
        ArchOption("decoder_skips", 2, lambda v: _is_int(v) and v in (1, 2), "1 or 2",
                   "decoder skip connections (2: the paper's best)", choices=(1, 2), flag="--skips"),
        ArchOption("aspp_concat", False, lambda v: isinstance(v, bool), "true or false",
                   "the 'ASPP concatenated' variant", cli_type=bool),
    ),
    build=_build_deeplab,
    multiple=lambda o: min(2 ** o["encoder_depth"], DEEPLAB_OUTPUT_STRIDE),
    rules=_deeplab_rules,
    from_v1=_deeplab_from_v1,
    unused_parameters=smp_unused_parameters,
)


#: Every architecture by name; the first is the default.
ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (DEEPLABV3PLUS, UNET)}
DEFAULT_ARCH = next(iter(ARCHITECTURES))


def architecture(name: Any) -> Architecture:
    """The registry entry ``name``; unknown → ``ModelError``."""
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ModelError(f"model config: arch must be one of {', '.join(ARCHITECTURES)}, got {name!r}")
    return ARCHITECTURES[name]


def create_model(arch: str, in_channels: int, classes: int, **options: Any) -> nn.Module:
    """The network ``arch`` with ``options`` (defaults filled in, checked), randomly initialised, offline."""
    entry = architecture(arch)
    return entry.build(in_channels, classes, **entry.resolve(options))
