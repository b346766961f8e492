"""progress.phases: several steps of one job drive one forward-only bar."""

from __future__ import annotations

import pytest

from fossilsegment_engine.progress import phases


def test_phases_share_one_bar_in_order() -> None:
    seen: list[tuple[int, int]] = []
    first, second = phases(lambda d, t: seen.append((d, t)), [3, 1], scale=100)
    for d in (1, 2, 4):
        first(d, 4)
    assert seen[-1] == (75, 100)
    second(0, 7)
    second(7, 7)
    assert [d for d, _ in seen] == [19, 38, 75, 75, 100] and {t for _, t in seen} == {100}
    second(0, 0)  # a phase with nothing to do counts as done
    assert seen[-1] == (100, 100)


def test_phases_without_a_callback_and_bad_weights() -> None:
    assert phases(None, [1, 2]) == [None, None]
    with pytest.raises(ValueError):
        phases(lambda d, t: None, [0, 0])
    with pytest.raises(ValueError):
        phases(lambda d, t: None, [2, -1])
