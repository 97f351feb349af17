"""Undo for "remove the last turn" (F9): the removed messages are kept in memory and put
back on request.

Removal deletes at once (nothing half-done is left in the history if the app dies), after
taking a copy of the user message and everything below it. Undo writes the copy back under
the same parent, parents before children, with text, finish reason and token figures, and
shows the thread the user was looking at. (The restored rows get new ids and times.)
No Textual here: the chat screen shows the toast and binds the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from baize_tui.history import Message

#: How long the undo is offered after a removal (seconds).
UNDO_S = 30.0


@dataclass
class RemovedTurn:
    """A removed subtree: its messages (parents first) and the leaf that was shown."""

    conversation_id: int
    messages: list[Message] = field(default_factory=list)
    leaf_id: int | None = None


class TurnUndo:
    """Removes a turn keeping a copy, and puts the last removed turn back."""

    def __init__(self) -> None:
        self.last: RemovedTurn | None = None

    def remove(self, history: Any, conversation_id: int, message_id: int) -> RemovedTurn:
        """Delete ``message_id`` and what is below it; remember them for :meth:`restore`."""
        everything = history.messages(conversation_id)
        below = {message_id}
        kept: list[Message] = []
        for message in everything:  # oldest first: a parent comes before its children
            if message.id in below or message.parent_id in below:
                below.add(message.id)
                kept.append(message)
        leaf = history.get_conversation(conversation_id).current_leaf_id
        history.delete_message(message_id)
        self.last = RemovedTurn(conversation_id, kept, leaf if leaf in below else None)
        return self.last

    def restore(self, history: Any) -> int | None:
        """Write the last removed turn back; returns its conversation id (``None``: nothing
        to undo). The shown thread is the one shown before the removal."""
        removed, self.last = self.last, None
        if removed is None or not removed.messages:
            return None
        new_ids: dict[int, int] = {}
        for message in removed.messages:
            parent = message.parent_id
            parent = new_ids.get(parent, parent) if parent is not None else None
            new_id = history.add_message(
                removed.conversation_id, parent_id=parent, role=message.role,
                text=message.text, model=message.model, params=message.params,
                complete=message.complete)
            history.update_message(
                new_id, finish_reason=message.finish_reason,
                prompt_tokens=message.prompt_tokens,
                completion_tokens=message.completion_tokens, ttft_s=message.ttft_s,
                tokens_per_s=message.tokens_per_s)
            new_ids[message.id] = new_id
        leaf = new_ids.get(removed.leaf_id) if removed.leaf_id is not None else None
        if leaf is None:
            leaf = new_ids[removed.messages[-1].id]
        history.set_current_leaf(leaf)
        return removed.conversation_id

    def forget(self) -> None:
        """Drop the copy (the undo is no longer offered)."""
        self.last = None
