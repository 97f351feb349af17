"""After a relaunch, a run whose trainer is gone reads as interrupted (and resumable), in
``train status``, ``train list`` and the training screen, never as still training.

Two real run directories: one whose recorded pid has exited, and one whose pid now belongs to
another process that even names the run directory on its command line (pid reuse after a
reboot). Only the start-time check in ``baize_tui.procs`` tells that stranger from the trainer.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from textual.app import App
from textual.widgets import Button, Static
from ui_helpers import wait_until

from baize_tui.cli import main
from baize_tui.paths import get_paths
from baize_tui.procs import process_alive, process_start_time
from baize_tui.train.runs import Run, write_json_atomic
from baize_tui.train.settings import TrainConfig


def make_run(name: str, pid: int, launched: float) -> Run:
    """A run directory as a trainer killed mid-training leaves it: ``status.json`` still says
    "training", one complete checkpoint."""
    run = Run(get_paths().runs_dir / name)
    run.dir.mkdir(parents=True)
    run.config_file.write_text(TrainConfig(base="base-model", data=["d.json"]).to_toml())
    write_json_atomic(run.run_file, {"pid": pid, "pgid": pid, "launched": launched,
                                     "started": launched})
    write_json_atomic(run.status_file, {"state": "training", "step": 7, "max_steps": 20,
                                        "updated": launched + 1})
    ckpt = run.checkpoints_dir / "checkpoint-6"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    return run


@pytest.fixture
def runs() -> Iterator[tuple[Run, Run, subprocess.Popen]]:
    """(run whose pid is dead, run whose pid was reused, the process that reused it)."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    launched = time.time() - 3600  # the trainer was launched an hour ago, before a reboot
    dead = make_run("run-dead", int(gone), launched)
    reused_dir = get_paths().runs_dir / "run-reused"
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)",
                                 str(reused_dir)])
    try:
        reused = make_run("run-reused", stranger.pid, launched)
        yield dead, reused, stranger
    finally:
        stranger.kill()
        stranger.wait()


def test_the_start_time_check_tells_a_reused_pid_from_the_trainer(runs) -> None:
    _, reused, stranger = runs
    started = process_start_time(stranger.pid)
    assert started is not None and abs(started - time.time()) < 120
    # the command line names the run: without the start time it would pass for the trainer
    assert process_alive(stranger.pid, str(reused.dir))
    assert not process_alive(stranger.pid, str(reused.dir), started_by=time.time() - 3600)
    assert not reused.alive()
    # launched after the process started: the same process, still alive
    write_json_atomic(reused.run_file, {"pid": stranger.pid, "launched": time.time()})
    assert reused.alive() and reused.status()["state"] == "training"


@pytest.mark.parametrize("which", [0, 1], ids=["pid-dead", "pid-reused"])
def test_train_status_and_list_say_interrupted_and_how_to_resume(
        runs, which: int, capsys: pytest.CaptureFixture[str]) -> None:
    run = runs[which]
    assert run.raw_status()["state"] == "training"
    assert main(["train", "status", str(run.dir)]) == 0
    out = capsys.readouterr().out
    state_line = next(line for line in out.splitlines() if line.startswith("state"))
    assert "interrupted" in state_line and "training -" not in state_line
    assert f"train resume {run.dir}" in state_line and "checkpoint-6" in state_line
    assert main(["train", "list"]) == 0
    listed = {line.split()[-1]: line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert listed == {str(runs[0].dir): "interrupted", str(runs[1].dir): "interrupted"}
    assert run.raw_status()["state"] == "training"  # the run's own files are left alone


class Host(App[None]):
    """A bare app showing only the training screen (as F7 opens it after a relaunch)."""

    def on_mount(self) -> None:
        from baize_tui.ui.train_screen import TrainScreen

        self.push_screen(TrainScreen())


async def test_the_training_screen_shows_stopped_runs_as_interrupted_and_resumable(runs) -> None:
    from baize_tui.ui.train_screen import TrainScreen

    dead, reused, _ = runs
    app = Host()
    async with app.run_test(size=(170, 60), notifications=False) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, TrainScreen))
        screen = app.screen
        assert isinstance(screen, TrainScreen)
        await wait_until(pilot, lambda: len(screen.run_labels) == 2,
                         why=lambda: str(screen.run_labels))
        assert screen.run_labels == {str(dead.dir): "run-dead (interrupted)",
                                     str(reused.dir): "run-reused (interrupted)"}
        assert screen.run is not None  # re-attached to one of them
        await wait_until(pilot, lambda: screen.status.get("state") == "interrupted",
                         why=lambda: str(screen.status))
        status = str(screen.query_one("#tr-status", Static).render())
        assert "state interrupted" in status and "train resume" in status
        assert not screen.alive
        # resumable from the screen; nothing to stop
        resume = screen.query_one("#tr-resume", Button)
        await wait_until(pilot, lambda: not resume.disabled)
        assert screen.query_one("#tr-stop", Button).disabled
