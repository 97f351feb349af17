"""What the user does on the chat screen besides sending: edit a message (a new branch),
remove and restore a turn, browse branches, copy, export, the chat settings (F2), the chat
list's actions and the command palette's entries."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.widgets import Static

from baize_tui.chat_core import ChatSettings
from baize_tui.history import Message, NotFoundError
from baize_tui.ui.chat_turns import ChatTurns
from baize_tui.ui.screens import ConfirmScreen, PromptScreen, SettingsScreen
from baize_tui.ui.sidebar import Sidebar
from baize_tui.ui.turn_undo import UNDO_S
from baize_tui.ui.widgets import MessageView, code_blocks

log = logging.getLogger("baize_tui.ui")


class ChatActions(ChatTurns):
    """The chat screen's actions on messages, chats and settings."""

    async def action_new_chat(self) -> None:
        """Start a new, empty conversation."""
        await self.open_conversation(None)
        self.prompt_box.focus()

    def action_edit_last(self) -> None:
        """Put the last user message back in the prompt box; sending it makes a new branch."""
        message = self._last_message("user")
        if message is None:
            self.notify("No message to edit.", severity="warning")
            return
        self.edit_message(message, last=True)

    @on(MessageView.EditRequested)
    def _edit_requested(self, event: MessageView.EditRequested) -> None:
        view = event.view
        if view.info.message_id is None:
            return
        if view.role != "user":
            self.notify("Only your own messages can be edited (e on one of them).",
                        severity="warning")
            return
        self.edit_message(self.baize.history.get_message(view.info.message_id))

    def edit_message(self, message: Message, *, last: bool = False) -> None:
        """Put ``message`` (a user message, any in the thread) in the prompt box; sending it
        makes a new branch from there."""
        if self.busy:
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        self._editing = message
        banner = self.query_one("#edit-banner", Static)
        what = "your last message" if last else "an earlier message"
        banner.update(f"Editing {what}: Enter sends it as a new branch, Esc cancels.")
        banner.add_class("visible")
        self.prompt_box.text = message.text
        self.prompt_box.move_cursor(self.prompt_box.document.end)
        self.prompt_box.focus()

    async def action_remove_last_turn(self) -> None:
        """Delete the last exchange (the user message and its replies) from this branch."""
        if self.busy:
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        message = self._last_message("user")
        if message is None:
            self.notify("Nothing to remove.", severity="warning")
            return
        assert self.conversation_id is not None
        self.undo.remove(self.baize.history, self.conversation_id, message.id)
        await self.reload_transcript()
        self.sidebar.reload()
        self.notify("Removed the last turn. Ctrl+Z puts it back.", title="Removed",
                    timeout=UNDO_S)
        self.set_timer(UNDO_S, self.undo.forget)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "undo_remove":  # Ctrl+Z is the text box's own undo otherwise
            return self.undo.last is not None
        return True

    async def action_undo_remove(self) -> None:
        """Put back the turn F9 removed."""
        if self.busy:
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        conversation_id = self.undo.restore(self.baize.history)
        if conversation_id is None:
            return
        if conversation_id == self.conversation_id:
            await self.reload_transcript()
        self.sidebar.reload()
        self.notify("Turn restored.", timeout=3)

    async def action_branch(self, step: int) -> None:
        """Show the previous (-1) or next (+1) branch at the focused (or last) message."""
        view = self._target_view(role=None)
        if view is not None:
            await self._switch_branch(view, step)

    @on(MessageView.BranchRequested)
    async def _branch_requested(self, event: MessageView.BranchRequested) -> None:
        await self._switch_branch(event.view, event.step)

    async def _switch_branch(self, view: MessageView, step: int) -> None:
        if self.busy:
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        if view.info.message_id is None:
            return
        history = self.baize.history
        ids = [m.id for m in history.siblings(view.info.message_id)]
        index = ids.index(view.info.message_id) + step
        if len(ids) < 2 or not 0 <= index < len(ids):
            self.notify("No other branch that way." if len(ids) > 1 else "This message has "
                        "no other branches.", timeout=2)
            return
        history.select_branch(ids[index])
        await self.reload_transcript(focus_message=ids[index])

    def action_copy_message(self) -> None:
        """Copy the focused (or last) reply to the clipboard."""
        view = self._target_view()
        if view is not None:
            self._copy(view, code=False)

    def action_copy_code(self) -> None:
        """Copy the last code block of the focused (or last) reply."""
        view = self._target_view()
        if view is not None:
            self._copy(view, code=True)

    @on(MessageView.CopyRequested)
    def _copy_requested(self, event: MessageView.CopyRequested) -> None:
        self._copy(event.view, event.code)

    def _copy(self, view: MessageView, code: bool, index: int = -1) -> None:
        text = view.text
        what = "message"
        if code:
            blocks = code_blocks(text)
            if not blocks:
                self.notify("No code block in this message.", severity="warning")
                return
            text = blocks[index][1]
            what = "code block"
        self.baize.copy_text(text, what)

    @work(group="dialog")
    async def action_export(self) -> None:
        """Save the conversation as Markdown (or JSON, by the file's extension)."""
        if self.conversation_id is None:
            self.notify("Nothing to export yet.", severity="warning")
            return
        from baize_tui.paths import get_paths

        default = get_paths().data_dir / "exports" / f"conversation-{self.conversation_id}.md"
        path = await self.app.push_screen_wait(PromptScreen(
            "Export this chat to (.md for Markdown, .json for the lossless JSON export):",
            str(default), ok_label="Export", complete_paths=True))
        if path:
            self.export_to(Path(path).expanduser())

    def export_to(self, path: Path) -> None:
        """Write the current conversation to ``path`` (format by extension)."""
        import json

        from baize_tui.config import atomic_write_text

        assert self.conversation_id is not None
        history = self.baize.history
        if path.suffix.lower() == ".json":
            text = json.dumps(history.export_json(self.conversation_id), ensure_ascii=False,
                              indent=2) + "\n"
        else:
            text = history.export_markdown(self.conversation_id)
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            self.notify(f"{path}: {exc.strerror or exc}", title="Export failed",
                        severity="error")
            return
        self.notify(f"Saved to {path}", title="Exported")

    @work(group="dialog")
    async def action_settings(self) -> None:
        """Open the per-chat settings."""
        if self.busy:
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        current = self.settings or ChatSettings.from_config(self.baize.config)
        resolved = self.chat_format()
        default_system = resolved.format.default_system if resolved is not None else None
        from baize_tui.endpoints import listed_specs

        config = self.baize.config
        new = await self.app.push_screen_wait(
            SettingsScreen(current, self.known_models(), default_system=default_system,
                           more_models=lambda: listed_specs(config)))
        if new is not None:
            self.apply_settings(new)

    def known_models(self) -> list[str]:
        """Model specs for the settings' picker: in use, default, recent, on disk, and the
        endpoints' models configured in config.toml (``[openai] models``)."""
        from baize_tui.endpoints import configured_specs
        from baize_tui.known_models import known_specs

        try:
            from baize_tui.models import list_models

            on_disk = [m.path for m in list_models(include_hf_cache=False) if not m.broken]
        except Exception:  # a bad models folder must not keep the settings from opening
            log.debug("could not list the models", exc_info=True)
            on_disk = []
        return known_specs(default=str(self.baize.config.get("model", {}).get("default") or ""),
                           current=(self.settings.model if self.settings else ""),
                           history=self.baize.history, on_disk=on_disk,
                           endpoints=configured_specs(self.baize.config))

    def apply_settings(self, settings: ChatSettings) -> None:
        """Use new settings from the next turn on (saved with the conversation)."""
        self.settings = settings
        if self.conversation_id is not None:
            self.baize.history.update_conversation(
                self.conversation_id, system_prompt=settings.system_prompt,
                model=settings.model, params=settings.stored_params())
        self.baize.ensure_model(settings.model, settings.n_ctx, settings.lora)
        self._show_format()
        self.notify("Settings saved; they apply from the next message.", timeout=3)

    def action_toggle_sidebar(self) -> None:
        """Show or hide the conversation list (this choice stands until the next Ctrl+B)."""
        self.sidebar.toggle_class("hidden")
        self._sidebar_choice = not self.sidebar.has_class("hidden")

    def action_search(self) -> None:
        """Focus the search box of the sidebar."""
        self._sidebar_choice = True
        self.sidebar.remove_class("hidden")
        self.set_focus(self.sidebar.query_one("#search"))

    # ------------------------------------------------------------------ sidebar

    @on(Sidebar.Open)
    async def _open(self, event: Sidebar.Open) -> None:
        try:
            await self.open_conversation(event.conversation_id)
        except NotFoundError:
            self._gone(event.conversation_id)
            return
        self.prompt_box.focus()

    def _gone(self, conversation_id: int) -> None:
        """A conversation listed here was deleted elsewhere (another app window, the CLI)."""
        self.notify(f"Conversation {conversation_id} no longer exists (deleted elsewhere).",
                    severity="warning")
        self.sidebar.reload()

    @on(Sidebar.Action)
    def _sidebar_action(self, event: Sidebar.Action) -> None:
        self.conversation_action(event.action, event.conversation_id)

    @work(group="dialog")
    async def conversation_action(self, action: str, conversation_id: int) -> None:
        """Rename, archive/restore or delete a conversation (asking first where it should)."""
        history = self.baize.history
        try:
            conv = history.get_conversation(conversation_id)
        except NotFoundError:
            self._gone(conversation_id)
            return
        if action == "rename":
            title = await self.app.push_screen_wait(
                PromptScreen("New title:", conv.display_title, ok_label="Rename"))
            if title:
                history.rename(conversation_id, title)
                self.notify(f"Renamed to {title!r}.", timeout=2)
        elif action == "archive":
            history.set_archived(conversation_id, not conv.archived)
            self.notify(("Restored" if conv.archived else "Archived (v in the list shows the "
                         "archive)") + f": {conv.display_title}", timeout=3)
        elif action == "delete":
            sure = await self.app.push_screen_wait(ConfirmScreen(
                f"Delete {conv.display_title!r} and all its messages? This cannot be undone.",
                "Delete"))
            if not sure:
                return
            if conversation_id == self.conversation_id and self.busy:
                self.notify("Stop the reply first (Esc).", severity="warning")
                return
            history.delete_conversation(conversation_id)
            self.notify(f"Deleted {conv.display_title!r}.", timeout=2)
            if conversation_id == self.conversation_id:
                await self.open_conversation(None)
        self.sidebar.reload()

    # ------------------------------------------------------------------ palette

    def palette_commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        """(title, help, callback) for every chat action, for the command palette."""
        commands: list[tuple[str, str, Callable[[], Any]]] = [
            ("Stop generating", "Stop the reply (Esc); the partial text is kept",
             self.action_stop),
            ("New chat", "Start a new conversation", self.action_new_chat),
            ("Regenerate reply", "A new answer to the last message; the old one stays as a "
             "branch", self.action_regenerate),
            ("Edit last message", "Edit and resend your last message as a new branch",
             self.action_edit_last),
            ("Remove last turn", "Delete the last message and its reply",
             self.action_remove_last_turn),
            ("Previous branch", "Show the previous alternative of the focused (or last) message",
             lambda: self.run_action("branch(-1)")),
            ("Next branch", "Show the next alternative of the focused (or last) message",
             lambda: self.run_action("branch(1)")),
            ("Copy message", "Copy the focused (or last) reply", self.action_copy_message),
            ("Export chat", "Save this conversation as Markdown or JSON", self.action_export),
            ("Chat settings", "Model, system prompt, sampling, context size",
             self.action_settings),
            ("Toggle sidebar", "Show or hide the conversation list", self.action_toggle_sidebar),
            ("Search chats", "Full-text search over every conversation", self.action_search),
            ("Show archived chats", "Switch the list between chats and the archive",
             self.sidebar.action_toggle_archived),
        ]
        if self.conversation_id is not None:
            conversation_id = self.conversation_id
            commands += [
                ("Rename chat", "Give this conversation a new title",
                 lambda: self.conversation_action("rename", conversation_id)),
                ("Archive or restore chat", "Hide this conversation from the list (or bring it "
                 "back)", lambda: self.conversation_action("archive", conversation_id)),
                ("Delete chat", "Delete this conversation (asks first)",
                 lambda: self.conversation_action("delete", conversation_id)),
            ]
        view = self._target_view()
        if view is not None:
            for n, (lang, code) in enumerate(code_blocks(view.text)):
                first = code.strip().splitlines()[0][:40] if code.strip() else ""
                commands.append((
                    f"Copy code block {n + 1}" + (f" ({lang})" if lang else ""),
                    Text(first).plain,
                    partial(self._copy, view, True, n),
                ))
        return commands
