"""Options shared by several sub-commands, each declared once with one help text, and the parser class that
shows every default in ``--help``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import _progress

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BACKENDS = ("auto", "eager", "compiled", "int8")

PRECISION_HELP = ("autocast precision; auto: bf16 on GPUs (fp16 where a GPU lacks bf16) and on CPUs with native "
                  "bf16 (AVX512-BF16/AMX), else fp32")
FORCE_HELP = "overwrite outputs that already exist (without it, an existing output is an error and nothing is written)"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless its text already names the default or there is none
    to show (None, a flag, a required option)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.nargs == 0 or action.required:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows defaults; sub-command parsers made from it inherit the class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def add_output_option(p: argparse.ArgumentParser, help: str, metavar: str, required: bool = False,
                      default: Path | None = None) -> None:
    """``-o/--output``: where a command writes (a file or a folder, as ``metavar`` says)."""
    p.add_argument("-o", "--output", type=Path, required=required, default=default, metavar=metavar, help=help)


def add_force_option(p: argparse.ArgumentParser, help: str = FORCE_HELP) -> None:
    """``--force``."""
    p.add_argument("--force", action="store_true", help=help)


def add_model_option(p: argparse.ArgumentParser) -> None:
    """``--model NAME|DIR``."""
    p.add_argument("--model", default=None, metavar="NAME|DIR",
                   help="bundled model name or model folder (default: the bundled default model)")


def add_device_option(p: argparse.ArgumentParser) -> None:
    """``--device``."""
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")


def add_precision_option(p: argparse.ArgumentParser) -> None:
    """``--precision`` (running, training and fine-tuning a model alike)."""
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)


def add_batch_size_option(p: argparse.ArgumentParser) -> None:
    """``--batch-size`` of inference (slices per batch)."""
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="slices per batch (default: chosen for the device)")


def add_threads_option(p: argparse.ArgumentParser) -> None:
    """``--threads``: CPU threads for torch."""
    p.add_argument("--threads", type=int, default=None, metavar="T",
                   help="CPU threads for torch (default: torch's choice)")


def add_inference_options(p: argparse.ArgumentParser, backend: str = "auto", thorough: bool = True) -> None:
    """What loads and runs a model: ``--model --device --batch-size --precision --backend`` (and ``--thorough``
    unless ``thorough`` is False)."""
    add_model_option(p)
    add_device_option(p)
    add_batch_size_option(p)
    add_precision_option(p)
    p.add_argument("--backend", default=backend, choices=BACKENDS,
                   help="auto: chosen per job by the engine (eager, or torch.compile for large CPU jobs where a C++ "
                        "compiler exists); eager: plain PyTorch; compiled: torch.compile; int8: quantized, CPU only, "
                        "needs torchao (opt-in: auto never chooses it)")
    if not thorough:
        return
    p.add_argument("--thorough", action="store_true",
                   help="average five passes (axial, coronal, sagittal, and axial mirrored left-right and up-down): "
                        "about 5x slower and holds a copy of the volume in memory, more accurate (docs/benchmarks/"
                        "thorough.md); a view whose slices are under 32 pixels a side or very anisotropic is left out")


def add_cleanup_options(p: argparse.ArgumentParser) -> None:
    """The clean-up after segmenting: ``--min-island``, ``--no-fill-holes``."""
    p.add_argument("--min-island", type=int, default=64, metavar="VOXELS",
                   help="remove connected pieces smaller than this; every larger piece is kept")
    p.add_argument("--no-fill-holes", action="store_true", help="do not fill cavities enclosed inside bone")


def add_labelmap_option(p: argparse.ArgumentParser) -> None:
    """``--labelmap OUT.nrrd``: the labels as a volume file."""
    p.add_argument("--labelmap", type=Path, default=None, metavar="OUT.nrrd",
                   help="uint8 labelmap in the input's exact geometry (.nrrd, .nii.gz, .nii, .mha)")


def add_spacing_option(p: argparse.ArgumentParser) -> None:
    """``--spacing SI SJ SK`` for inputs without spacing metadata."""
    p.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("SI", "SJ", "SK"),
                   help="voxel spacing in mm for image stacks without spacing metadata")


def add_progress_option(p: argparse.ArgumentParser) -> None:
    """``--progress bar|jsonl`` (on the top-level parser: it applies to every command)."""
    p.add_argument("--progress", default="bar", choices=_progress.MODES,
                   help="bar: progress bars on stderr; jsonl: one JSON line per update on stdout "
                        '({"phase", "done", "total"}), and errors as {"error": message} (for programs)')


def load_segmenter(args: argparse.Namespace):
    """The Predictor for ``--model/--device/--batch-size/--precision/--backend/--thorough`` (loaded once)."""
    from ..inference.predictor import Predictor

    return Predictor.load(args.model, device=args.device, batch_size=args.batch_size, precision=args.precision,
                          backend=getattr(args, "backend", "auto"), thorough=bool(getattr(args, "thorough", False)))


def postprocess_options(args: argparse.Namespace) -> Any:
    """The PostprocessOptions for ``--min-island/--no-fill-holes``."""
    from ..inference.postprocess import PostprocessOptions

    return PostprocessOptions(min_island_voxels=args.min_island, fill_holes=not args.no_fill_holes)


def add_mesh_options(p: argparse.ArgumentParser) -> None:
    """How meshes are made and written (Slicer's defaults)."""
    p.add_argument("--mesh-format", action="append", default=None, metavar="stl|ply|obj",
                   help="mesh file format(s): repeat or give a comma list (default: stl)")
    p.add_argument("--mesh-coordinates", default="LPS", type=str.upper, choices=["LPS", "RAS"],
                   help="mesh coordinate system (default: LPS, as Slicer writes STL)")
    p.add_argument("--smoothing", type=float, default=0.5, metavar="F",
                   help="mesh smoothing factor 0..1 (default: 0.5, Slicer's default)")
    p.add_argument("--decimation", type=float, default=0.0, metavar="F",
                   help="fraction 0..1 of triangles to remove (default: 0, none)")
    p.add_argument("--max-mesh-triangles", type=int, default=None, metavar="N",
                   help="refuse (write nothing) when a mesh would have more than N triangles (default: no limit)")


def mesh_options(args: argparse.Namespace) -> Any:
    """The MeshOptions for the mesh options (validated)."""
    from ..io.mesh_io import MeshOptions, parse_formats

    return MeshOptions(formats=parse_formats(args.mesh_format), coordinates=args.mesh_coordinates,
                       smoothing=args.smoothing, decimation=args.decimation, max_triangles=args.max_mesh_triangles)
