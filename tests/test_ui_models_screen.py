"""The models screen, driven with Textual's Pilot over real GGUF files (and the local hub)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hub_server import HubServer
from textual.app import App
from textual.widgets import Button, DataTable, Input, ProgressBar, Select, Static
from ui_helpers import press_effect_over, settled, wait_until

from baize_tui import models
from baize_tui.config import load_config
from baize_tui.paths import get_paths
from baize_tui.ui.models_screen import ConfirmModal, ModelsScreen


class Host(App[None]):
    """A bare app showing only the models screen."""

    def on_mount(self) -> None:
        self.push_screen(ModelsScreen())



def status(app: App, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


@pytest.fixture
def local_models(tiny_gguf: Path) -> Path:
    """The tiny GGUF and a truncated copy in the models directory."""
    models_dir = get_paths().models_dir
    models_dir.mkdir(parents=True)
    good = models_dir / "tiny-llama-F16.gguf"
    shutil.copy(tiny_gguf, good)
    data = tiny_gguf.read_bytes()
    (models_dir / "cut.gguf").write_bytes(data[: len(data) // 2])
    return good


async def test_lists_sets_default_and_deletes_with_confirmation(local_models: Path) -> None:
    app = Host()
    async with app.run_test(size=(140, 40), notifications=False) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ModelsScreen))
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        table = screen.query_one("#models", DataTable)
        await wait_until(pilot, lambda: table.row_count == 2)
        names = [m.name for m in screen.models]
        assert sorted(names) == ["cut.gguf", "tiny-llama-F16.gguf"]
        broken = screen.models[names.index("cut.gguf")]
        row = [str(c) for c in table.get_row(str(broken.path))]
        assert row[2].startswith("broken:")  # Status comes right after the name
        good_row = [str(c) for c in table.get_row(str(local_models))]
        assert good_row[3] == "F16" and good_row[2] == "ok"
        # offline (conftest sets HF_HUB_OFFLINE): a clear banner, the Get button off
        assert "Offline" in status(app, "#offline")
        assert screen.query_one("#get", Button).disabled

        # a broken model cannot become the default
        table.focus()
        table.move_cursor(row=names.index("cut.gguf"))
        await pilot.press("d")
        assert "broken" in status(app, "#models-status")
        assert load_config()["model"].get("default", "") == ""

        table.move_cursor(row=names.index("tiny-llama-F16.gguf"))
        await pilot.click("#set-default")
        assert load_config()["model"]["default"] == str(local_models)
        await wait_until(pilot, lambda: str(table.get_row(str(local_models))[0]) == "★")

        # delete: the confirmation's Cancel keeps the file, Delete removes it
        table.move_cursor(row=[m.name for m in screen.models].index("tiny-llama-F16.gguf"))
        await pilot.click("#delete")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.click("#no")
        await wait_until(pilot, lambda: app.screen is screen)
        assert local_models.exists()
        await pilot.click("#delete")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.click("#yes")
        await wait_until(pilot, lambda: table.row_count == 1)
        assert not local_models.exists()
        assert load_config()["model"]["default"] == ""  # the default went with it
        assert [m.name for m in screen.models] == ["cut.gguf"]


async def test_get_a_model_from_the_hub_with_progress(hub: HubServer, tiny_gguf: Path) -> None:
    repo_dir = hub.add_repo("someone/tiny-GGUF", files={"README.md": b"# tiny\n"})
    shutil.copy(tiny_gguf, repo_dir / "tiny-llama-Q4_K_M.gguf")
    app = Host()
    async with app.run_test(size=(140, 40), notifications=False) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ModelsScreen))
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        assert not screen.query_one("#get", Button).disabled
        assert not screen.query_one("#offline", Static).display
        await pilot.click("#repo")
        await pilot.press(*"someone/tiny-GGUF")
        await pilot.click("#get")
        table = screen.query_one("#models", DataTable)
        await wait_until(pilot, lambda: table.row_count == 1, timeout=30,
                         why=lambda: status(app, "#pull-status"))
        assert screen.models[0].name == "tiny-llama-Q4_K_M.gguf"
        assert "Saved" in status(app, "#pull-status")
        bar = screen.query_one("#pull-progress", ProgressBar)
        assert bar.total == (repo_dir / "tiny-llama-Q4_K_M.gguf").stat().st_size
        assert bar.percentage == 1
        assert not screen.query_one("#get", Button).disabled
    assert (get_paths().models_dir / "tiny-llama-Q4_K_M.gguf").exists()
    assert models.find_model("tiny-llama-Q4_K_M.gguf").quant == "F16"


async def test_baize_recipe_shows_the_plan_and_asks_first(hub: HubServer,
                                                          tiny: dict[str, Path]) -> None:
    hub.add_repo("huggyllama/llama-7b", tiny["llama"])
    hub.add_repo("project-baize/baize-lora-7B", tiny["lora_v1"])
    app = Host()
    async with app.run_test(size=(140, 40), notifications=False) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ModelsScreen))
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        screen.query_one("#known", Select).value = "project-baize/baize-lora-7B"  # quick pick
        await wait_until(pilot, lambda: screen.query_one("#repo", Input).value
                         == "project-baize/baize-lora-7B", what="the quick pick to fill the repo")
        screen.query_one("#quant", Input).value = "q8_0"

        # the plan (download, disk, time) comes first; Cancel starts nothing
        await pilot.click("#get")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), timeout=30,
                         why=lambda: status(app, "#pull-status"))
        await settled(pilot)  # the dialog composed and laid out: its buttons take clicks
        body = str(app.screen.query_one(".confirm-body", Static).render())
        assert "disk" in body and "time" in body and "baize-lora-7B-Q8_0.gguf" in body
        await pilot.click("#no")
        await wait_until(pilot, lambda: app.screen is screen)
        await wait_until(pilot, lambda: "Not started" in status(app, "#pull-status"),
                         why=lambda: status(app, "#pull-status"))
        assert not (get_paths().models_dir / "baize-lora-7B-Q8_0.gguf").exists()

        await press_effect_over(pilot, "#get")
        await pilot.click("#get")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), timeout=30)
        await settled(pilot)
        await pilot.click("#yes")
        table = screen.query_one("#models", DataTable)
        await wait_until(pilot, lambda: table.row_count == 1, timeout=60,
                         why=lambda: status(app, "#pull-status"))
        model = screen.models[0]
        assert model.name == "baize-lora-7B-Q8_0.gguf" and model.quant == "Q8_0"
        assert model.baize_template and not model.broken
        assert str(table.get_row(str(model.path))[6]) == "Baize"
