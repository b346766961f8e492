"""One CLI grammar: every sub-command's ``--help`` runs, names its output ``-o/--output``, shows its defaults,
and the shared options read the same everywhere."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from fossilsegment_engine.cli import COMMANDS, build_parser, main
from fossilsegment_engine.cli.options import PRECISION_HELP


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _help(command: str, capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _option_blocks(text: str) -> dict[str, str]:
    """``--option`` → its help text (one line, whitespace collapsed), from a rendered ``--help``."""
    blocks: dict[str, str] = {}
    current = None
    for line in text.split("options:", 1)[1].splitlines():
        m = re.match(r"  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if m:
            current = [s.split()[0] for s in m.group(1).split(", ")][-1]
            blocks[current] = m.group(2) or ""
        elif current and line.startswith("   "):
            blocks[current] += " " + line.strip()
    return {k: " ".join(v.split()) for k, v in blocks.items()}


def test_every_command_is_registered() -> None:
    assert set(_subparsers()) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_the_output_and_shows_defaults(command: str, capsys: pytest.CaptureFixture) -> None:
    text = _help(command, capsys)
    parser = _subparsers()[command]
    flags = {s for a in parser._actions for s in a.option_strings}
    # every command writes something, always through -o/--output; the old spellings are gone
    assert {"-o", "--output"} <= flags
    assert not flags & {"--out", "--json"}
    assert not [a.dest for a in parser._actions if not a.option_strings and a.dest in ("outdir", "output")]
    blocks = _option_blocks(text)
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0 or action.required or action.default is None:
            continue  # flags, required options and "off unless given" options have no default to show
        flag = action.option_strings[-1]
        assert "default" in blocks[flag], f"{command} {flag}: default {action.default!r} not shown: {blocks[flag]}"


def test_shared_options_have_one_help_text(capsys: pytest.CaptureFixture) -> None:
    seen: dict[str, set[str]] = {}
    for command in COMMANDS:
        for flag, text in _option_blocks(_help(command, capsys)).items():
            seen.setdefault(flag, set()).add(re.sub(r" \(default: [^)]*\)$", "", text))  # defaults may differ
    for flag in ("--model", "--device", "--backend", "--min-island", "--no-fill-holes", "--spacing", "--labelmap",
                 "--threads", "--precision"):
        assert len(seen[flag]) == 1, f"{flag} has several help texts: {seen[flag]}"
    # precision: one rule for running, training and fine-tuning; the text names auto's choice on GPUs and CPUs
    assert " ".join(PRECISION_HELP.split()) in next(iter(seen["--precision"]))
    assert "--force" in seen and "--batch-size" in seen


@pytest.mark.parametrize("command", ["evaluate", "tune-threshold"])
def test_inference_commands_accept_precision_backend_batch_size(command: str) -> None:
    args = _subparsers()[command].parse_args(
        ["--data", "d", "-o", "o", "--precision", "bf16", "--backend", "eager", "--batch-size", "3"])
    assert (args.precision, args.backend, args.batch_size) == ("bf16", "eager", 3)


@pytest.mark.parametrize("command", ["finetune", "learn"])
def test_training_commands_accept_precision(command: str) -> None:
    args = _subparsers()[command].parse_args(["v", "l", "--slices", "1", "-o", "o", "--precision", "fp32"])
    assert args.precision == "fp32"


def test_calibrate_is_not_a_command(capsys: pytest.CaptureFixture) -> None:
    # "calibrate" names the int8 backend's calibration; the fossil/matrix threshold command is tune-threshold
    with pytest.raises(SystemExit) as exit_info:
        main(["calibrate", "--data", "d", "-o", "o"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'calibrate'" in capsys.readouterr().err


def test_phantom_output_is_an_option(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["phantom", str(tmp_path / "P")])  # the old positional OUTDIR
    assert "-o/--output" in capsys.readouterr().err
    assert not (tmp_path / "P").exists()


def test_building_the_parser_does_not_load_torch() -> None:
    """``fossilsegment --help`` and argument errors come back in about a second: torch and smp load only when a
    command runs (a fresh interpreter, since this test session has torch loaded already)."""
    import subprocess
    import sys

    code = ("import sys; from fossilsegment_engine.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'segmentation_models_pytorch', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
