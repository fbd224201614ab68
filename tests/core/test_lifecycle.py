"""Background-task helpers (app/core/lifecycle.py)."""

from __future__ import annotations

import pytest

from app.core.lifecycle import sweep_paced


class Stop(Exception):
    pass


def test_a_paced_sweep_visits_every_key_once_per_interval_in_slices_that_keys_keep():
    first = [f"sid{n}" for n in range(100)]
    second = [*first[50:], "new"]  # half gone, one new: the rest keep their slices
    rounds = iter([first, second])
    slices: list[list[str]] = []

    def keys():
        try:
            return next(rounds)
        except StopIteration:
            raise Stop from None

    def sleep(seconds):
        assert seconds == pytest.approx(0.1)
        slices.append([])

    with pytest.raises(Stop):
        sweep_paced(sleep, 1.0, keys, lambda key: slices[-1].append(key), slices=10)

    assert len(slices) == 20  # two intervals of ten slices
    one, two = slices[:10], slices[10:]
    assert sorted(key for keys in one for key in keys) == sorted(first)  # each once
    assert sorted(key for keys in two for key in keys) == sorted(second)
    slot = {key: n for n, keys in enumerate(one) for key in keys}
    assert all(slot[key] == n for n, keys in enumerate(two) for key in keys if key != "new")
    # one pause of the worker is a slice, not the whole sweep
    assert max(len(keys) for keys in one) < 30
