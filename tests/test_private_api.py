"""The private names of Textual and llama-cpp-python that baize-tui uses, each still there.

Each library's private uses live in one module (``baize_tui/ui/textual_compat.py``,
``baize_tui/engines/llama_compat.py``) that lists them in ``PRIVATE_NAMES``. When an upgrade
moves one, the app keeps working through its fallback, and this test says which name moved
and where to look, so the range in pyproject.toml is widened only after a check.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import version
from typing import Any

import pytest

from baize_tui.engines import llama_compat
from baize_tui.ui import textual_compat


def _instance(cls: type) -> Any:
    """An instance of ``cls`` for attributes that exist only once ``__init__`` ran."""
    return cls()


def resolve(module_name: str, path: str) -> object:
    """``module.a.b.c``: class attributes first, then those an instance of the class has."""
    obj: Any = importlib.import_module(module_name)
    for part in path.split("."):
        if hasattr(obj, part):
            obj = getattr(obj, part)
        elif isinstance(obj, type) and hasattr(_instance(obj), part):
            obj = getattr(_instance(obj), part)
        else:
            raise AttributeError(part)
    return obj


CASES = [("textual", m, p) for m, p in textual_compat.PRIVATE_NAMES] + [
    ("llama-cpp-python", m, p) for m, p in llama_compat.PRIVATE_NAMES]


@pytest.mark.parametrize(("dist", "module", "path"), CASES,
                         ids=[f"{m}:{p}" for _, m, p in CASES])
def test_private_name_is_still_there(dist: str, module: str, path: str) -> None:
    try:
        resolve(module, path)
    except (ImportError, AttributeError) as exc:
        owner = "baize_tui/ui/textual_compat.py" if dist == "textual" else \
            "baize_tui/engines/llama_compat.py"
        pytest.fail(
            f"{dist} {version(dist)} has no {module}.{path} ({type(exc).__name__}: {exc}). "
            f"baize-tui falls back to public API without it (slower or less detailed); update "
            f"{owner} for this release, then widen the {dist} range in pyproject.toml.")


def test_every_private_use_is_listed() -> None:
    """No private Textual/llama_cpp name outside the two compat modules (by a plain scan)."""
    from pathlib import Path

    root = Path(textual_compat.__file__).parents[1]
    compat = {Path(textual_compat.__file__), Path(llama_compat.__file__)}
    offenders = []
    for source in root.rglob("*.py"):
        if source in compat:
            continue
        text = source.read_text(encoding="utf-8")
        for needle in ("textual._", "._compositor", "._refresh_layout", "._screen_stacks",
                       "._keymap", "._replace_via_keyboard", "super()._on_", "llama_log_set",
                       "llama_module.sys", ".eval = "):
            if needle in text:
                offenders.append(f"{source.relative_to(root)}: {needle}")
    assert not offenders, offenders


def test_without_textual_compositor_the_stock_one_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """If ``textual._compositor`` moves, the module still imports and the screen keeps
    Textual's own compositor."""
    from textual.screen import Screen

    monkeypatch.setitem(sys.modules, "textual._compositor", None)  # import fails
    moved = importlib.reload(textual_compat)
    try:
        screen = Screen()
        stock = screen._compositor
        assert moved.install_reflow_compositor(screen) is False
        assert screen._compositor is stock
    finally:
        monkeypatch.undo()
        importlib.reload(textual_compat)
    screen = Screen()
    assert textual_compat.install_reflow_compositor(screen) is True
    assert isinstance(screen._compositor, textual_compat.ReflowCompositor)


def test_fallbacks_use_public_api() -> None:
    from types import SimpleNamespace

    app = SimpleNamespace(current_mode="chat", screen_stack=["base", "top"])
    assert textual_compat.screen_stack(app, "chat") == ["base", "top"]  # type: ignore[arg-type]
    assert textual_compat.screen_stack(app, "train") == []  # type: ignore[arg-type]
    assert textual_compat.current_keymap(app) == {}  # type: ignore[arg-type]


async def test_shift_enter_without_the_private_edit_method(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from textual.app import App, ComposeResult

    from baize_tui.ui.widgets import ChatInput

    sent: list[str] = []

    class Box(App[None]):
        def compose(self) -> ComposeResult:
            yield ChatInput(id="box")

        def on_chat_input_submitted(self, message: ChatInput.Submitted) -> None:
            sent.append(message.text)

    app = Box()
    async with app.run_test() as pilot:
        box = app.query_one(ChatInput)
        box.text = "ab"
        box.move_cursor((0, 1))
        # (TextArea itself types through the same method: only the newline is tested here)
        monkeypatch.setattr(ChatInput, "_replace_via_keyboard", None, raising=False)
        await pilot.press("shift+enter")
        monkeypatch.undo()
        await pilot.press("enter")
        await pilot.pause()
        assert sent == ["a\nb"]


def test_llama_without_eval_still_counts_nothing_and_loads() -> None:
    class NoEval:
        pass

    engine = type("E", (), {"evaluated_total": 0})()
    assert llama_compat.count_evaluated(NoEval(), engine) is False
