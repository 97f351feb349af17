"""Fields that help the user pick: paths that complete, and a searchable list of models.

* :class:`PathInput` completes file-system paths as you type (the rest of the name shows
  dimmed; → or End takes it), like a shell's Tab.
* :class:`ModelInput` does the same and also completes the models the app knows (the
  default, models used by past chats, GGUFs in the models folder, endpoints);
  :class:`ModelList` under it lists those models, narrowed to what is typed, and Enter or
  a click on one puts it in the field.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from textual import on
from textual.suggester import Suggester
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option

#: Entries of one directory a path completion looks at, at most (a huge folder stays fast).
MAX_DIR_ENTRIES = 2000


def complete_path(value: str) -> str | None:
    """The first existing path that ``value`` is the start of (directories end in ``/``),
    or ``None``. ``~`` is kept as typed."""
    if not value or value.startswith(("openai:", "hf:", "http:", "https:")):
        return None
    expanded = os.path.expanduser(value)
    directory, prefix = os.path.split(expanded)
    folder = Path(directory or ".")
    try:
        with os.scandir(folder) as entries:
            names = []
            for n, entry in enumerate(entries):
                if n >= MAX_DIR_ENTRIES:
                    break
                if entry.name.startswith(prefix) and not entry.name.startswith("."):
                    names.append(entry.name + ("/" if entry.is_dir() else ""))
    except OSError:
        return None
    if not names:
        return None
    best = sorted(names, key=lambda name: (not name.endswith((".gguf", "/")), name))[0]
    completed = os.path.join(directory, best) if directory else best
    if expanded != value and value.startswith("~"):  # give back the ~ the user typed
        home = os.path.expanduser("~")
        completed = "~" + completed[len(home):]
    return completed if completed != value else None


class PathSuggester(Suggester):
    """Suggests the completion of a path (and, first, of any ``known`` value)."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.known = list(known)

    async def get_suggestion(self, value: str) -> str | None:
        for item in self.known:
            if item.startswith(value) and item != value:
                return item
        return complete_path(value)


class PathInput(Input):
    """A one-line path field whose value completes to existing files and folders."""

    def __init__(self, value: str = "", *, id: str | None = None,
                 placeholder: str = "", compact: bool = True) -> None:
        super().__init__(value, id=id, placeholder=placeholder, compact=compact,
                         suggester=PathSuggester())


class ModelInput(Input):
    """The model field: completes known models and paths."""

    def __init__(self, value: str, known: list[str], *, id: str | None = None) -> None:
        self._suggester = PathSuggester(known)
        super().__init__(value, id=id, compact=True, suggester=self._suggester)
        self.known = known

    def add_known(self, specs: list[str]) -> None:
        """Complete ``specs`` too."""
        self._suggester.known.extend(s for s in specs if s not in self._suggester.known)


def filter_models(known: Iterable[str], text: str) -> list[str]:
    """The known models whose spec contains every word of ``text`` (case-insensitive)."""
    words = text.lower().split()
    return [spec for spec in known if all(word in spec.lower() for word in words)]


class ModelList(OptionList):
    """Known models, narrowed to what the model field holds; choosing one fills it in."""

    def __init__(self, known: list[str], target: str, *, id: str | None = None) -> None:
        super().__init__(*[Option(spec, id=spec) for spec in known], id=id, compact=True)
        self.known = list(known)
        self.display = bool(known)  # shown once there is something to pick
        self.target = target

    def add_known(self, specs: list[str]) -> None:
        """List ``specs`` too (narrowed like the rest to what the model field holds)."""
        self.known = [*self.known, *(s for s in specs if s not in self.known)]
        try:
            text = self.screen.query_one(f"#{self.target}", Input).value
        except Exception:  # not on a screen with the field (yet)
            text = ""
        self.narrow(text)

    def narrow(self, text: str) -> None:
        """Show only the models matching ``text`` (all of them when it is one of them)."""
        self.display = bool(self.known)
        shown = self.known if text in self.known else filter_models(self.known, text)
        self.clear_options()
        self.add_options([Option(spec, id=spec) for spec in shown])

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        field = self.screen.query_one(f"#{self.target}", Input)
        field.value = str(event.option.id)
        field.cursor_position = len(field.value)
        field.focus()


def checked_lora(model: str, lora: str) -> str | None:
    """The LoRA adapter field's value, checked against the model field: blank is none; else
    an existing GGUF LoRA adapter made for this GGUF model, as an absolute path (so the
    conversation can be continued from anywhere). A :class:`UserError` says what is wrong."""
    from baize_tui.errors import UserError

    if not lora:
        return None
    kind, sep, _ = model.partition(":")
    if sep and kind in ("openai", "hf"):
        raise UserError(f"applies to a GGUF model, not {kind}:… (for hf:, give the adapter "
                        "in the model field as hf:BASE+LORA)")
    from baize_tui.engines.llama import check_lora_gguf
    from baize_tui.engines.lora_match import check_lora_matches

    try:
        path = check_lora_gguf(Path(lora).expanduser().absolute())
    except UserError as exc:  # name this form's fields, not the command line's flags
        raise UserError(str(exc).replace(
            "give it with -m, and an adapter made by `baize-convert lora` with --lora",
            "put it in the Model field; an adapter is made by `baize-convert lora`")) from None
    base = Path(model).expanduser()
    if base.is_file():
        check_lora_matches(base, path)
    return str(path)
