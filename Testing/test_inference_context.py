"""2.5D context stacks: centring, replicated ends, memmaps, bad arguments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fossilsegment_engine.errors import InputError, ModelError
from fossilsegment_engine.inference.context import context_indices, context_slices


def _volume(k: int = 6) -> np.ndarray:
    # slice k is filled with the value k, so stacks can be read as slice indices
    return np.broadcast_to(np.arange(k, dtype=np.int16)[:, None, None], (k, 3, 4)).copy()


def test_three_slice_context_replicates_the_ends() -> None:
    stacks = context_slices(_volume(), [0, 2, 5], 3)
    assert stacks.shape == (3, 3, 3, 4) and stacks.dtype == np.int16
    assert stacks[:, :, 0, 0].tolist() == [[0, 0, 1], [1, 2, 3], [4, 5, 5]]


def test_five_slice_context_and_single_slice() -> None:
    vol = _volume()
    assert context_slices(vol, [0, 1, 3], 5)[:, :, 1, 2].tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [1, 2, 3, 4, 5]]
    single = context_slices(vol, [4], 1)
    assert single.shape == (1, 1, 3, 4) and np.array_equal(single[0, 0], vol[4])


def test_tiny_volume_pads_both_sides_with_its_only_slices() -> None:
    assert context_indices(2, [0, 1], 5).tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]]


def test_works_on_a_memmap(tmp_path: Path) -> None:
    vol = _volume(8)
    mm = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=vol.dtype, shape=vol.shape)
    mm[:] = vol
    mm.flush()
    ro = np.load(tmp_path / "v.npy", mmap_mode="r")
    out = context_slices(ro, [7, 3], 3)
    assert isinstance(out, np.ndarray) and not isinstance(out, np.memmap)
    assert out[:, :, 0, 0].tolist() == [[6, 7, 7], [2, 3, 4]]


@pytest.mark.parametrize("n", [0, 2, 4, -1, 1.0, True])
def test_bad_context_count_is_a_model_error(n) -> None:
    with pytest.raises(ModelError, match="context_slices"):
        context_slices(_volume(), [0], n)


def test_out_of_range_index_and_2d_array_are_input_errors() -> None:
    with pytest.raises(InputError, match="out of range"):
        context_slices(_volume(), [6], 3)
    with pytest.raises(InputError, match="out of range"):
        context_slices(_volume(), [-1], 3)
    with pytest.raises(InputError, match="3D"):
        context_slices(np.zeros((4, 4)), [0], 1)
