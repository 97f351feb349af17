"""The collector's full passes are held off while replies stream, and given back after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from baize_tui.ui.gc_pacing import FullCollectionPacer


@pytest.fixture
def full_passes() -> Iterator[list[int]]:
    """Counts the collector's full (oldest-generation) passes while the test runs."""
    passes: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            passes.append(1)

    saved = gc.get_threshold()
    gc.callbacks.append(count)
    yield passes
    gc.callbacks.remove(count)
    gc.set_threshold(*saved)


def test_full_passes_are_held_then_given_back(full_passes: list[int]) -> None:
    before = gc.get_threshold()
    pacer = FullCollectionPacer(every=3600)
    pacer.start()
    assert gc.get_threshold()[:2] == before[:2]  # young generations as usual
    assert gc.get_threshold()[2] > 1_000_000  # no full pass by itself
    pacer.tick()  # not due yet
    assert full_passes == []
    assert pacer.stop() is True
    assert pacer.holding and gc.get_threshold()[2] > 1_000_000  # until released
    pacer.release()
    assert len(full_passes) == 1  # the held-off pass ran
    assert gc.get_threshold() == before and not pacer.holding


def test_a_due_pass_runs_while_holding(full_passes: list[int]) -> None:
    pacer = FullCollectionPacer(every=0.0)
    pacer.start()
    pacer.tick()
    pacer.tick()
    assert len(full_passes) == 2
    pacer.stop()
    pacer.release()


def test_holds_nest_and_a_new_hold_cancels_a_pending_release(full_passes: list[int]) -> None:
    before = gc.get_threshold()
    pacer = FullCollectionPacer(every=3600)
    pacer.start()
    pacer.start()
    assert pacer.stop() is False  # one hold left
    assert pacer.stop() is True
    pacer.start()  # the next reply began before the release ran
    pacer.release()
    assert full_passes == [] and gc.get_threshold()[2] > 1_000_000
    assert pacer.stop() is True
    pacer.release()
    assert gc.get_threshold() == before
    assert pacer.stop() is False  # stopping with no hold is harmless


def test_reset_drops_every_hold() -> None:
    before = gc.get_threshold()
    pacer = FullCollectionPacer()
    pacer.start()
    pacer.start()
    pacer.reset()
    assert gc.get_threshold() == before and not pacer.holding
