"""Training: data discovery/checks/split, augmentation, loss, a tiny run that resumes, and 2-rank DDP."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from _helpers_training import TINY, write_dataset, write_specimen
from fossilsegment_engine.errors import InputError, OutputError
from fossilsegment_engine.training.augment import AugmentOptions, augment_batch, augment_preset, field_of_view_edge
from fossilsegment_engine.training.data import find_specimens, select_slices, split_by_specimen
from fossilsegment_engine.training.losses import DiceCELoss
from fossilsegment_engine.training.train import TrainOptions, lr_at, train, train_model


def _opts(data: Path, out: Path, **kw) -> TrainOptions:
    base = dict(data_dirs=[data], out_dir=out, **TINY, epochs=1, steps_per_epoch=2, batch_size=2, crop=64,
                threads=1, val_fraction=0.34, val_max_slices=4, device="cpu")
    base.update(kw)
    return TrainOptions(**base)


def test_find_and_split_by_specimen(tmp_path: Path) -> None:
    write_dataset(tmp_path / "a", n=2)
    write_specimen(tmp_path / "b", 5)  # a DIR that is itself a specimen
    specs = find_specimens([tmp_path / "a", tmp_path / "b"])
    assert [s.name for s in specs] == ["spec0", "spec1", "b"]
    train_a, val_a = split_by_specimen(specs, 0.34, seed=3)
    train_b, val_b = split_by_specimen(specs, 0.34, seed=3)
    assert train_a == train_b and val_a == val_b and len(val_a) == 1
    assert not {s.folder for s in train_a} & {s.folder for s in val_a}


def test_slice_selection_drops_blank_and_caps_empty() -> None:
    labels = np.zeros((40, 32, 32), np.uint8)
    labels[10:20, 8:16, 8:16] = 1  # 10 foreground slices
    image = np.random.default_rng(0).uniform(0, 1, labels.shape).astype(np.float32)
    image[30:] = 0.5  # blank slices
    kept = select_slices(image, labels, np.random.default_rng(0))
    assert set(range(10, 20)) <= set(kept.tolist())
    assert not set(range(30, 40)) & set(kept.tolist())
    assert len(kept) - 10 == 2  # empty slices capped at 10 % of the kept slices (ceil(10/9·1))


def test_augment_keeps_image_and_labels_aligned() -> None:
    labels = torch.zeros(4, 32, 32, dtype=torch.long)
    labels[:, 5:20, 8:14] = 1
    image = labels[:, None].float().repeat(1, 3, 1, 1)
    geo_only = AugmentOptions(p_intensity=0, p_blur=0, p_noise=0, p_rings=0, p_streaks=0, p_affine=0,
                              p_flip=1, p_rot90=1)
    x, y = augment_batch(image, labels, torch.Generator().manual_seed(1), geo_only)
    assert torch.equal(x[:, 1].long(), y) and not torch.equal(y, labels)
    x2, y2 = augment_batch(image * 0.5 + 0.2, labels, torch.Generator().manual_seed(1))
    x3, _ = augment_batch(image * 0.5 + 0.2, labels, torch.Generator().manual_seed(1))
    assert torch.equal(x2, x3) and x2.shape == image.shape and 0 <= x2.min() and x2.max() <= 1
    assert set(y2.unique().tolist()) <= {0, 1}
    assert augment_preset("light").p_noise == 0 and not augment_preset("none").enabled
    with pytest.raises(ValueError):
        augment_preset("heavy")


def test_zoom_in_makes_bone_thicker_in_pixels_for_training_only() -> None:
    labels = torch.zeros(8, 64, 64, dtype=torch.long)
    labels[:, 28:36, 28:36] = 1  # an 8-px square bone at the centre
    image = labels[:, None].float()
    geometry_only = dict(p_intensity=0, p_blur=0, p_noise=0, p_rings=0, p_streaks=0, p_flip=0, p_rot90=0)
    _, zoomed = augment_batch(image, labels, torch.Generator().manual_seed(0),
                              AugmentOptions(p_zoom_in=1.0, **geometry_only))
    _, mild = augment_batch(image, labels, torch.Generator().manual_seed(0),
                            AugmentOptions(p_affine=1.0, **geometry_only))
    area = labels[0].sum().item()
    # zoom 1.25–4× makes the square 1.56–16× larger (the shift may move part of it out of the crop)
    assert (zoomed.sum((1, 2)) > 1.4 * area).float().mean() >= 0.75
    assert (mild.sum((1, 2)) < 1.6 * area).all()  # the ordinary affine: zoom 0.8–1.25
    assert augment_preset("full").p_zoom_in > 0 and augment_preset("light").p_zoom_in > 0
    assert AugmentOptions().p_zoom_in == 0  # `learn` fine-tunes on the user's own scan: its scale is known


def test_field_of_view_edge_is_constant_fill_and_matrix_outside() -> None:
    gen = torch.Generator().manual_seed(3)
    fills, outside_share = set(), []
    for _ in range(40):
        image = torch.stack([torch.full((64, 64), 0.3), torch.full((64, 64), 0.7)])  # two context slices differ
        x, y = field_of_view_edge(image, torch.ones(64, 64, dtype=torch.long), gen)
        outside = x[0] == x[1]  # only the fill makes the slices equal
        if outside.any():
            assert x[0][outside].unique().numel() == 1  # one constant fill
            fills.add(round(x[0][outside][0].item(), 3))
        assert (y[outside] == 0).all()  # nothing outside the field of view is bone
        seen = (x[1] - x[0])[y == 1]  # where bone is kept, at least half of the image shows through the blend
        assert (seen >= 0.5 * 0.4 - 1e-6).all()
        outside_share.append(outside.float().mean().item())
    assert {0.0, 1.0} <= fills  # black and white fills both occur
    assert min(outside_share) < 0.5 and max(outside_share) > 0.05  # the edge crosses the crop
    assert AugmentOptions().p_fov_edge == 0 and augment_preset("full").p_fov_edge > 0  # not in `learn`'s defaults


def test_loss_prefers_the_truth() -> None:
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, 4:10, 4:10] = 1
    good = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 10
    loss = DiceCELoss()
    assert loss(good, target) < 0.05 < loss(-good, target)


def test_lr_schedule_warms_up_and_decays() -> None:
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.01)


def test_train_writes_loadable_model_and_resumes(tmp_path: Path) -> None:
    import threading

    from fossilsegment_engine.errors import Cancelled
    from fossilsegment_engine.models import load_model

    data = write_dataset(tmp_path / "data", n=3)
    out = tmp_path / "model"
    cancel = threading.Event()

    def stop_in_epoch_two(done: int, total: int) -> None:
        if done == 3:
            cancel.set()

    with pytest.raises(Cancelled):  # interrupted during epoch 2: epoch 1's state stays
        train(_opts(data, out, epochs=2), progress=stop_in_epoch_two, cancel=cancel)
    model, config = load_model(out)
    assert config.provenance["training"]["train_specimens"] and config.provenance["training"]["validation_specimens"]
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 1
    with pytest.raises(OutputError):
        train(_opts(data, out, epochs=2))
    r = train_model(_opts(data, out, epochs=2, resume=True))
    assert [h["epoch"] for h in r.history] == [1, 2]
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 2
    # resuming reproduces the uninterrupted run
    r_straight = train_model(_opts(data, tmp_path / "straight", epochs=2))
    a, b = r.model.state_dict(), r_straight.model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


@pytest.mark.parametrize("case", ["geometry", "labels", "empty"])
def test_bad_input_writes_nothing(tmp_path: Path, case: str) -> None:
    data = tmp_path / "data"
    if case == "geometry":
        write_dataset(data, n=1)
        write_specimen(data / "bad", 9, label_spacing=(0.6, 0.5, 1.0))
    elif case == "labels":
        write_dataset(data, n=2, teeth=True)  # label 2 but the model has Background + Bone only
    else:
        data.mkdir()
    out = tmp_path / "model"
    with pytest.raises(InputError):
        train(_opts(data, out))
    assert not out.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str, dump: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from safetensors.torch import save_file

    r = train_model(_opts(Path(data), Path(out), epochs=1, steps_per_epoch=3))
    save_file({k: v.contiguous() for k, v in r.model.state_dict().items()}, f"{dump}/rank{rank}.safetensors")


@pytest.mark.slow
def test_ddp_two_cpu_ranks_end_identical(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    data = write_dataset(tmp_path / "data", n=3)
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(data), str(tmp_path / "model"), str(tmp_path)), nprocs=2)
    w0, w1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    start = train_model(_opts(data, tmp_path / "single", epochs=1, steps_per_epoch=1, lr=1e-12)).model.state_dict()
    assert any(not torch.allclose(w0[k].float(), start[k].float()) for k in w0 if w0[k].is_floating_point())
    log = [json.loads(line) for line in (tmp_path / "model" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 1  # only rank 0 wrote
    assert json.loads((tmp_path / "model" / "config.json").read_text())["provenance"]["training"]["world_size"] == 2


def test_select_class_keeps_the_epoch_best_for_that_class(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n=3, teeth=True)
    r = train_model(_opts(data, tmp_path / "m", epochs=2, teeth=True, select_class="Bone"))
    for h in r.history:
        assert h["val_score"] == pytest.approx(h["val"]["Bone"]["mean_dice"] or 0.0)
    best = max(r.history, key=lambda h: h["val_score"])
    assert r.best_epoch == best["epoch"]
    with pytest.raises(InputError, match="not a foreground class"):
        train(_opts(data, tmp_path / "bad", teeth=True, select_class="Background"))
    assert not (tmp_path / "bad").exists()
