"""Background-task helpers (app/core/lifecycle.py)."""

from __future__ import annotations

import pytest

from app.core.lifecycle import Deadlines, sweep_paced


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


def test_deadlines_make_each_call_once_when_due_in_time_order():
    made: list[str] = []
    deadlines = Deadlines(lambda run: None, lambda seconds: None)
    for when, name in ((3.0, "c"), (1.0, "a"), (2.0, "b1"), (2.0, "b2"), (9.0, "later")):
        deadlines.at(when, made.append, name)

    assert deadlines.run_due(now=0.5) == 0
    assert deadlines.run_due(now=2.0) == 3
    assert made == ["a", "b1", "b2"]  # equal times: in the order they were added
    assert deadlines.run_due(now=5.0) == 1 and made[-1] == "c"
    assert len(deadlines) == 1  # "later" waits


def test_a_failing_call_is_logged_and_the_others_are_made(caplog):
    made: list[int] = []
    deadlines = Deadlines(lambda run: None, lambda seconds: None)

    def broken():
        raise RuntimeError("a session that fails")

    deadlines.at(1.0, broken)
    deadlines.at(1.0, made.append, 1)
    assert deadlines.run_due(now=1.0) == 2
    assert made == [1]
    assert "a session that fails" in caplog.text


def test_many_calls_due_at_once_let_the_others_run_between_chunks():
    sleeps: list[float] = []
    deadlines = Deadlines(lambda run: None, sleeps.append, chunk=100)
    for _ in range(250):
        deadlines.at(1.0, lambda: None)
    assert deadlines.run_due(now=1.0) == 250
    assert sleeps == [0, 0]  # after the 100th and the 200th call


def test_the_deadline_task_starts_with_the_first_call_and_again_once_it_was_killed():
    started: list = []
    deadlines = Deadlines(lambda run: started.append(run) or run, lambda seconds: None)
    deadlines.at(1.0, print)
    deadlines.at(2.0, print)
    assert len(started) == 1  # one task, started by the first call (in the worker)

    def killed(seconds):
        raise Stop  # as GreenletExit reaches a killed task in its sleep

    deadlines._sleep = killed
    with pytest.raises(Stop):
        started[0]()
    deadlines.at(3.0, print)
    assert len(started) == 2


def test_a_paced_sweep_ends_when_its_sleep_says_so():
    waits = iter([None, None, True])  # an event's wait: set on the third slice
    visited: list[str] = []
    sweep_paced(lambda seconds: next(waits), 1.0, lambda: ["a", "b", "c", "d"], visited.append,
                slices=10)
    assert len(visited) <= 4  # two slices visited, then it returned
