"""Background-task helpers (app/core/lifecycle.py)."""

from __future__ import annotations

import pytest

from app.core.lifecycle import sweep_paced


class Stop(Exception):
    pass


def test_a_paced_sweep_visits_every_item_once_per_interval_a_slice_at_a_time():
    events: list = []
    rounds = iter([list(range(25)), list(range(100, 103))])

    def snapshot():
        try:
            return next(rounds)
        except StopIteration:
            raise Stop from None

    with pytest.raises(Stop):
        sweep_paced(lambda seconds: events.append(("sleep", seconds)), 1.0, snapshot,
                    lambda item: events.append(item), slices=10)

    sleeps = [e for e in events if isinstance(e, tuple)]
    assert sleeps == [("sleep", 0.1)] * 20  # two intervals of ten slices
    visited = [e for e in events if not isinstance(e, tuple)]
    assert sorted(visited) == [*range(25), *range(100, 103)]  # each once
    # between two sleeps (one pause of the worker), at most a tenth of the items
    run = longest = 0
    for event in events:
        run = 0 if isinstance(event, tuple) else run + 1
        longest = max(longest, run)
    assert longest == 3
