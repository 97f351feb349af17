"""The chat's status line, fitted to its width: every field stays visible at 80 and 100
columns (100 columns still show the chat list, so the line is about 68 cells wide there).

Each field has forms from long to short (``TTFT 0.12s`` → ``TTFT .12``). When the line is too
wide, fields are shortened one step at a time, the least important first, until it fits;
only if every field is at its shortest are fields dropped, least important first. The order
of importance: what is happening (loading, generating, an error), a stall, left-out turns,
the model, the context meter's numbers, the LoRA adapter, tokens/s, TTFT, the reply's
tokens, the chat format, the meter's bar (the first to go).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text
from textual.reactive import reactive

from baize_tui.ui.prompt_bar import StatusBar

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
SEPARATOR = "  "


def shorten(text: str, cells: int) -> str:
    """``text`` cut to ``cells`` characters with an ellipsis (whole when it fits)."""
    if len(text) <= cells:
        return text
    return text[: max(cells - 1, 0)] + "…"


@dataclass
class Field:
    """One field of the line: its forms, longest first, and its importance (higher stays)."""

    importance: int
    forms: list[Text] = field(default_factory=list)
    step: int = 0

    @property
    def text(self) -> Text:
        """The form in use."""
        return self.forms[self.step]

    def can_shorten(self) -> bool:
        """Whether a shorter form is left."""
        return self.step + 1 < len(self.forms)


def _styled(text: str, style: str = "") -> Text:
    return Text(text, style=style)


def _meter(used: int, n_ctx: int, width: int) -> Text:
    share = used / n_ctx
    filled = min(width, round(share * width))
    style = "red" if share > 0.9 else "yellow" if share > 0.7 else "green"
    out = Text()
    out.append("█" * filled, style=style)
    out.append("░" * (width - filled), style="dim")
    return out


def _state_field(bar: StatusBar) -> Field | None:
    if not bar.state:
        return None
    busy = bar.state.endswith("…")  # loading, generating, stopping: the spinner says it
    frame = _SPINNER[bar.spinner % len(_SPINNER)] if busy else "!"
    full = f"{frame} {bar.state}"
    return Field(
        100,
        [
            _styled(full, "bold"),
            _styled(shorten(full, 24), "bold"),
            _styled(frame if busy else shorten(full, 16), "bold"),
        ],
    )


def _model_field(bar: StatusBar) -> Field:
    label = bar.model_label
    return Field(80, [_styled(shorten(label, n), "bold") for n in (48, 28, 18, 12)])


def _numbers(bar: StatusBar) -> list[Field]:
    out = []
    if bar.live_tokens is not None:
        out.append(Field(50, [Text(f"{bar.live_tokens} tok"), Text(f"{bar.live_tokens}t")]))
    if bar.tokens_per_s is not None:
        rate = bar.tokens_per_s
        out.append(Field(60, [Text(f"{rate:.1f} tok/s"), Text(f"{rate:.0f} t/s")]))
    if bar.ttft_s is not None:
        ttft = bar.ttft_s
        out.append(Field(55, [Text(f"TTFT {ttft:.2f}s"), Text(f"TTFT {ttft:.1f}")]))
    return out


def _context_fields(bar: StatusBar) -> list[Field]:
    if not bar.n_ctx:
        return []
    used = "?" if bar.used_tokens is None else str(bar.used_tokens)
    fields = [Field(70, [Text(f"ctx {used}/{bar.n_ctx}"), Text(f"{used}/{bar.n_ctx}")])]
    if bar.used_tokens is not None:
        fields.append(
            Field(
                10,
                [
                    _meter(bar.used_tokens, bar.n_ctx, 8),
                    _meter(bar.used_tokens, bar.n_ctx, 4),
                    Text(),
                ],
            )
        )
    return fields


def _warning_fields(bar: StatusBar) -> list[Field]:
    out = []
    warn = "bold yellow"
    if bar.stalled_s is not None:
        s = bar.stalled_s
        out.append(
            Field(95, [_styled(f"no token for {s:.0f} s", warn), _styled(f"silent {s:.0f}s", warn)])
        )
    if bar.dropped_turns:
        n = bar.dropped_turns
        turns = f"turn{'s' if n != 1 else ''}"
        out.append(
            Field(
                90,
                [
                    _styled(f"⚠ {n} old {turns} left out to fit the context", warn),
                    _styled(f"⚠ {n} {turns} left out", warn),
                    _styled(f"⚠ -{n} turns", warn),
                ],
            )
        )
    return out


def status_fields(bar: StatusBar, lora: str = "") -> list[Field]:
    """The fields of the line, in display order."""
    fields: list[Field] = []
    state = _state_field(bar)
    if state is not None:
        fields.append(state)
    fields.append(_model_field(bar))
    if lora:
        fields.append(
            Field(
                65,
                [
                    Text(f"+ LoRA {shorten(lora, 28)}"),
                    Text(f"+{shorten(lora, 24)}"),
                    Text(f"+{shorten(lora, 14)}"),
                    Text("+LoRA"),
                ],
            )
        )
    if bar.chat_format:
        fmt = bar.chat_format
        fields.append(
            Field(40, [Text(f"format {fmt}"), Text(fmt), Text(shorten(fmt.split(" ")[0], 8))])
        )
    fields += _context_fields(bar)
    fields += _numbers(bar)
    fields += _warning_fields(bar)
    return fields


def _parts(fields: list[Field], shown: list[bool]) -> list[Text]:
    # a field whose shortest form is empty (the meter's bar) is gone at that step
    return [f.text for f, keep in zip(fields, shown, strict=True) if keep and f.text.cell_len]


def _width(fields: list[Field], shown: list[bool]) -> int:
    parts = _parts(fields, shown)
    return sum(p.cell_len for p in parts) + len(SEPARATOR) * max(len(parts) - 1, 0)


def fit(fields: list[Field], width: int) -> Text:
    """The fields joined on one line of at most ``width`` cells (see the module docstring)."""
    shown = [True] * len(fields)
    by_importance = sorted(range(len(fields)), key=lambda i: fields[i].importance)
    while _width(fields, shown) > width:
        target = next((i for i in by_importance if fields[i].can_shorten()), None)
        if target is not None:
            fields[target].step += 1
            continue
        target = next((i for i in by_importance if shown[i]), None)
        if target is None or sum(shown) == 1:
            break
        shown[target] = False
    out = Text(no_wrap=True, overflow="ellipsis")
    parts = _parts(fields, shown)
    for n, part in enumerate(parts):
        if n:
            out.append(SEPARATOR)
        out.append_text(part)
    out.truncate(max(width, 1), overflow="ellipsis")
    return out


class FittedStatusBar(StatusBar):
    """The chat's status line: :class:`StatusBar`'s fields plus the LoRA adapter, fitted to
    the width it has."""

    #: the LoRA adapter applied on the model (its file name), or ""
    lora: reactive[str] = reactive("")

    def render(self) -> Text:
        return fit(status_fields(self, self.lora), self.content_region.width or 80)
