"""Issue 5: fine-tuning on a few annotated slices (engine + CLI), with the tiny model and a tiny volume."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from fossilsegment_engine.errors import Cancelled, InputError, OutputError
from fossilsegment_engine.finetune import FinetuneOptions, finetune, finetune_in_memory, parse_slice_list
from fossilsegment_engine.finetune.tune import model_card
from fossilsegment_engine.inference.context import context_slices
from fossilsegment_engine.inference.normalize import apply_intensity_range, volume_intensity_range
from fossilsegment_engine.io import write_volume
from fossilsegment_engine.models import load_model, model_hash
from fossilsegment_engine.volume import Volume

SHAPE = (12, 64, 64)
FAST = dict(max_steps=4, batch_size=2, crop=32, device="cpu")


def scan() -> tuple[Volume, Volume]:
    """A bright ellipsoid ('bone') in noisy matrix, and its truth."""
    rng = np.random.default_rng(0)
    k, j, i = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    truth = (((k - 6) / 5.0) ** 2 + ((j - 30) / 18.0) ** 2 + ((i - 34) / 14.0) ** 2 < 1).astype(np.uint8)
    ct = (rng.normal(1000, 100, SHAPE) + 1500.0 * truth).astype(np.int16)
    vol = Volume(ct, (0.5, 0.5, 1.0), (3.0, -2.0, 1.0), meta={"source_path": "scan.nrrd"})
    return vol, vol.with_array(truth)


def test_parse_slice_list():
    assert parse_slice_list("10,80, 150") == [10, 80, 150]
    assert parse_slice_list("3-5,1,3") == [1, 3, 4, 5]
    with pytest.raises(InputError, match="comma-separated"):
        parse_slice_list("a,b")
    with pytest.raises(InputError, match="no annotated slice"):
        parse_slice_list(",")


@pytest.mark.slow
def test_finetune_writes_model_with_provenance(tmp_path, tiny_model_dir):
    vol, lab = scan()
    calls = []
    out = finetune(vol, lab, [2, 6, 9], tmp_path / "adapted", model=tiny_model_dir,
                   progress=lambda d, t: calls.append((d, t)), options=FinetuneOptions(**FAST))
    module, config = load_model(out)
    prov = config.provenance
    assert prov["finetuned_from"]["name"] == "tiny-test-unet"
    assert prov["finetuned_from"]["weights_sha256"] == model_hash(tiny_model_dir)
    assert prov["finetune"]["slices"] == [2, 6, 9] and prov["finetune"]["steps"] == 4
    assert prov["finetune"]["input"] == "scan.nrrd"
    assert config.name == "adapted" and (out / "MODEL_CARD.md").read_text().count("tiny-test-unet") >= 1
    assert calls and all(t == calls[0][1] for _, t in calls)
    parent, _ = load_model(tiny_model_dir)
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in
               zip(parent.state_dict().values(), module.state_dict().values()))


@pytest.mark.slow
def test_in_memory_does_not_touch_the_parent(tiny_model_dir):
    parent, cfg = load_model(tiny_model_dir)
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    vol, lab = scan()
    res = finetune_in_memory(vol, lab, [4, 7], (parent, cfg), FinetuneOptions(**FAST))
    assert res.report["steps"] == 4
    assert all(np.array_equal(before[k].numpy(), v.numpy()) for k, v in parent.state_dict().items())
    assert any(not np.array_equal(before[k].numpy(), v.numpy()) for k, v in res.module.state_dict().items()
               if v.dtype.is_floating_point)
    assert not res.module.training


@pytest.mark.slow
def test_trains_on_every_slice_for_max_steps(tiny_model_dir):
    vol, lab = scan()
    res = finetune_in_memory(vol, lab, [2, 6, 9], tiny_model_dir, FinetuneOptions(**FAST))
    r = res.report
    assert r["slices"] == [2, 6, 9] and r["steps"] == 4 and r["stopped_by"] == "max_steps"
    assert len(res.config.provenance["history"]) == 4 and "4 steps" in model_card(res)
    with pytest.raises(InputError, match="max_steps"):
        FinetuneOptions(max_steps=0)


def _slice_dice(module, config, vol: Volume, truth: Volume, k: int) -> float:
    """Foreground Dice of ``module``'s prediction of axial slice ``k``."""
    lo, hi = volume_intensity_range(vol.array, config.normalization)
    x = apply_intensity_range(context_slices(vol.array, [k], config.context_slices), lo, hi)
    with torch.no_grad():
        pred = module.eval()(torch.from_numpy(x)).argmax(1)[0].numpy() > 0
    t = truth.array[k] > 0
    return 2.0 * np.count_nonzero(pred & t) / max(1, np.count_nonzero(pred) + np.count_nonzero(t))


@pytest.mark.slow
def test_learning_improves_an_unannotated_slice(tiny_model_dir):
    """Enough steps on one easy volume must beat the random parent on a slice it never saw (can fail)."""
    vol, lab = scan()
    parent, cfg = load_model(tiny_model_dir)
    res = finetune_in_memory(vol, lab, [3, 9], (parent, cfg),
                             FinetuneOptions(max_steps=40, batch_size=4, crop=64, device="cpu", lr=3e-3))
    assert _slice_dice(res.module, res.config, vol, lab, 6) > _slice_dice(parent, cfg, vol, lab, 6) + 0.05


@pytest.mark.parametrize("slices, labels_fn, match", [
    ([2, 12], lambda lab: lab, r"slice\(s\) 12 outside the volume's axial slices 0..11"),
    ([0, 11], lambda lab: lab, "contain no foreground"),
    ([5], lambda lab: lab.with_array(lab.array * 3), r"label value\(s\) 3 that the model has no class for"),
    ([5], lambda lab: Volume(lab.array, (0.5, 0.5, 2.0)), "geometry"),
])
def test_bad_annotations(tmp_path, tiny_model_dir, slices, labels_fn, match):
    vol, lab = scan()
    with pytest.raises(InputError, match=match):
        finetune(vol, labels_fn(lab), slices, tmp_path / "out", model=tiny_model_dir, options=FinetuneOptions(**FAST))
    assert not (tmp_path / "out").exists()


def test_cancel_and_existing_output(tmp_path, tiny_model_dir):
    vol, lab = scan()
    token = threading.Event()
    with pytest.raises(Cancelled):
        finetune(vol, lab, [4, 7], tmp_path / "c", model=tiny_model_dir, options=FinetuneOptions(**FAST),
                 progress=lambda d, t: token.set(), cancel=token)
    assert not (tmp_path / "c").exists()
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputError, match="exists"):
        finetune(vol, lab, [4], tmp_path / "taken", model=tiny_model_dir, options=FinetuneOptions(**FAST))


@pytest.mark.slow
def test_cli_finetune(tmp_path, tiny_model_dir, capsys):
    from fossilsegment_engine.cli import main

    vol, lab = scan()
    write_volume(vol, tmp_path / "v.nrrd")
    write_volume(lab, tmp_path / "l.nrrd")
    other = Volume(lab.array, (0.5, 0.5, 2.0))
    write_volume(other, tmp_path / "other.nrrd")
    base = ["finetune", str(tmp_path / "v.nrrd"), str(tmp_path / "l.nrrd"), "--model", str(tiny_model_dir), "--device", "cpu",
            "--max-minutes", "0.05"]
    out = tmp_path / "m"
    assert main(base + ["--slices", "3,40", "-o", str(out)]) == 2
    assert "outside the volume" in capsys.readouterr().err and not out.exists()
    assert main(base[:2] + [str(tmp_path / "other.nrrd")] + base[3:] + ["--slices", "3", "-o", str(out)]) == 2
    assert "geometry" in capsys.readouterr().err and not out.exists()
    assert main(base + ["--slices", "0,11", "-o", str(out)]) == 2
    assert "no foreground" in capsys.readouterr().err and not out.exists()
    assert main(base + ["--slices", "4,6", "-o", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["provenance"]["finetune"]["slices"] == [4, 6] and "wrote" in capsys.readouterr().out
    assert main(base + ["--slices", "4,6", "-o", str(out)]) == 2  # exists, no --force
    assert main(base + ["--slices", "3,6,9", "--max-steps", "3", "-o", str(out), "--force"]) == 0
    tuned = json.loads((out / "config.json").read_text())["provenance"]["finetune"]
    assert tuned["options"]["max_steps"] == 3 and tuned["steps"] <= 3
    assert "slices [3, 6, 9]" in capsys.readouterr().out


@pytest.mark.slow
def test_batchnorm_statistics_are_measured_on_the_scan_then_frozen(tiny_model_dir):
    from fossilsegment_engine.finetune.tune import _scan_batches
    from fossilsegment_engine.models.batchnorm import recompute_batchnorm

    vol, lab = scan()
    parent, cfg = load_model(tiny_model_dir)
    res = finetune_in_memory(vol, lab, [4, 7], (parent, cfg), FinetuneOptions(**FAST))
    lo, hi = volume_intensity_range(vol.array, cfg.normalization)
    expected, _ = load_model(tiny_model_dir)
    assert recompute_batchnorm(expected, _scan_batches(vol.array, lo, hi, cfg.context_slices, 32,
                                                       torch.device("cpu"), FAST.get("seed", 0), None)) == 2
    got, want, old = res.module.state_dict(), expected.state_dict(), parent.state_dict()
    stats = [k for k in want if "running_" in k]
    assert stats
    for key in stats:  # the scan's statistics, unchanged by the training steps (frozen)
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6)
        assert not torch.equal(got[key], old[key]), key
