"""``scripts/benchmark_default_model.py``: the issue-target rows read the right families, at each phantom size."""

from __future__ import annotations

import pytest
from _helpers_scripts import load_script


def _script():
    return load_script("benchmark_default_model")


def _report(families: dict[str, tuple[float, float]]) -> dict:
    return {"by_family": {f: {"model": {"Bone": {"mean_dice": m}}, "otsu": {"Bone": {"mean_dice": o}}}
                          for f, (m, o) in families.items()}}


def test_targets_name_the_weakest_family_and_the_smallest_margin_per_size() -> None:
    bench = _script()
    medium = _report({"skull": (0.91, 0.20), "plates": (0.80, 0.10)})
    small = _report({"skull": (0.70, 0.50), "plates": (0.78, 0.05)})
    rows = bench.targets_table(medium, 0.92, 0.95, "medium", small)
    assert rows[2] == "| held-out family, bone mean Dice | 0.920 | ≥ 0.9 | yes |"
    assert rows[3] == "| held-out family, share of its measured ceiling | 0.968 (ceiling 0.950) | ≥ 0.95 | yes |"
    assert rows[4] == "| lowest family, size medium | 0.800 (plates) | ≥ 0.75 | yes |"
    assert rows[5] == "| smallest margin over Otsu, by family, size medium | 0.700 (plates) | ≥ 0.3 | yes |"
    assert rows[6] == "| lowest family, size small | 0.700 (skull) | ≥ 0.75 | no |"
    assert rows[7] == "| smallest margin over Otsu, by family, size small | 0.200 (skull) | ≥ 0.3 | no |"
    assert len(bench.targets_table(medium, None, None, "medium")) == 6  # no small phantoms: no small rows
    with_ceilings = bench.targets_table(medium, 0.92, 0.95, "medium", small, {"plates": 0.9}, {"skull": 0.74})
    assert with_ceilings[4] == "| lowest family, size medium | 0.800 (plates; ceiling 0.900) | ≥ 0.75 | yes |"
    assert with_ceilings[6] == "| lowest family, size small | 0.700 (skull; ceiling 0.740) | ≥ 0.75 | no |"
    assert "| held-out family, bone mean Dice | – | ≥ 0.9 | no |" in bench.targets_table(medium, None, None, "m")


def test_the_ceiling_note_names_its_file_and_steps(tmp_path) -> None:
    import json

    bench = _script()
    path = tmp_path / "docs" / "ceiling.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"rows": [{"family": "skull", "ceiling": 0.9, "steps": 2000},
                                         {"family": "plates", "ceiling": 0.8, "steps": 2000}]}))
    note = bench.ceiling_note(path, tmp_path)
    assert "[ceiling.json](docs/ceiling.json)" in note and "2000 steps" in note
    assert "no ceiling file" in bench.ceiling_note(tmp_path / "missing.json", tmp_path)


def test_family_tables_carry_the_ceiling_of_their_size_when_one_is_measured(tmp_path) -> None:
    import json

    bench = _script()
    report = _report({"skull": (0.70, 0.50), "plates": (0.78, 0.05)})
    assert bench.family_table(report)[0] == "| Family | Model | Otsu | Region growing |"
    table = bench.family_table(report, {"skull": 0.74})
    assert table[0].endswith("| Ceiling |") and table[1].count("---:") == 4
    assert table[2] == "| plates | 0.780 | 0.050 | – | – |"  # no ceiling measured for plates
    assert table[3] == "| skull | 0.700 | 0.500 | – | 0.740 |"
    medium, small = tmp_path / "docs" / "c.json", tmp_path / "docs" / "c_small.json"
    medium.parent.mkdir()
    for path in (medium, small):
        path.write_text(json.dumps({"rows": [{"family": "skull", "ceiling": 0.9, "steps": 2000}]}))
    note = bench.ceiling_note(medium, tmp_path, small)
    assert "[c.json](docs/c.json), size small [c_small.json](docs/c_small.json)" in note
    assert "size small" not in bench.ceiling_note(medium, tmp_path, tmp_path / "missing.json")


def test_a_folder_without_test_splits_is_refused_before_any_work(tmp_path, capsys) -> None:
    bench = _script()
    (tmp_path / "data" / "test_seen").mkdir(parents=True)
    (tmp_path / "data" / "test_heldout").mkdir()
    (tmp_path / "small" / "test_seen").mkdir(parents=True)
    md = tmp_path / "BENCHMARKS.md"
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--data-root", str(tmp_path / "data"), "--small-root", str(tmp_path / "small"),
                    "--md", str(md), "--assets", str(tmp_path / "assets")])
    assert exit_info.value.code == 2
    assert "small has no test_heldout folder" in capsys.readouterr().err
    assert not md.exists() and not (tmp_path / "assets").exists()


@pytest.mark.parametrize("option", ["--ceiling", "--small-ceiling"])
def test_a_bad_ceiling_file_is_refused_before_any_work(tmp_path, capsys, option) -> None:
    bench = _script()
    for split in ("test_seen", "test_heldout"):
        (tmp_path / "data" / split).mkdir(parents=True)
    bad = tmp_path / "ceiling.json"
    bad.write_text('{"rows": [{"family": "skull"}]}')
    md = tmp_path / "BENCHMARKS.md"
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--data-root", str(tmp_path / "data"), option, str(bad), "--md", str(md),
                    "--assets", str(tmp_path / "assets")])
    assert exit_info.value.code == 2
    assert "is not a scripts/measure_ceiling.py --json file" in capsys.readouterr().err
    assert not md.exists() and not (tmp_path / "assets").exists()


def test_the_committed_page_lists_the_scripts_other_benchmarks_verbatim() -> None:
    """BENCHMARKS.md is regenerated by the script: a line edited only in the page would be lost at the next run."""
    from pathlib import Path

    bench = _script()
    page = (Path(__file__).resolve().parents[1] / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert "## Other benchmarks\n" in page
    listed = page.split("## Other benchmarks\n", 1)[1].strip().splitlines()
    assert listed == list(bench.OTHER_BENCHMARKS)
