"""The conversation list: newest first, full-text search, rename, archive and delete.

The list is drawn from :meth:`HistoryStore.list_conversations` (a summary query: titles and
counts, never message text) and from :meth:`HistoryStore.search` while the search box has
text. Keys on the list: Enter opens, ``r`` renames, ``a`` archives or restores, ``Delete``
deletes (after a confirmation), ``v`` switches between the chats and the archive.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.await_complete import AwaitComplete
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.timer import Timer
from textual.widgets import Input, ListItem, ListView, Static

from baize_tui.history import HistoryStore, format_time

#: How many conversations the list shows at first (the newest); "… more" adds as many again,
#: and search reaches all of them.
LIST_PAGE = 50
_MARK = ("\x02", "\x03")
#: Cells a list row has for its text (the sidebar is 32 wide: minus border and padding).
ITEM_WIDTH = 29


def _snippet(snippet: str) -> Text:
    """A search snippet with the matched words in bold (the text is never read as markup)."""
    out = Text()
    bold = False
    for part in snippet.replace(_MARK[1], _MARK[0]).split(_MARK[0]):
        out.append(" ".join(part.split("\n")), style="bold reverse" if bold else "")
        bold = not bold
    return out


class ConversationItem(ListItem):
    """One row of the list: a conversation (or a search hit in one)."""

    def __init__(self, conversation_id: int, title: str, detail: Text | str,
                 *, archived: bool = False) -> None:
        super().__init__(classes="conversation-item" + (" archived" if archived else ""))
        self.conversation_id = conversation_id
        self.title = title
        self.detail = detail

    def compose(self) -> ComposeResult:
        # One widget for both lines: a long list must stay cheap to mount.
        # Lines are cut to the sidebar's width here, since one Text cannot be told to
        # wrap no line of two.
        title = Text(" ".join(self.title.split()))
        title.truncate(ITEM_WIDTH, overflow="ellipsis")
        detail = self.detail.copy() if isinstance(self.detail, Text) else Text(self.detail)
        detail.truncate(ITEM_WIDTH, overflow="ellipsis")
        detail.stylize("dim")
        yield Static(Text.assemble(title, "\n", detail), classes="conv-text")


class MoreItem(ListItem):
    """The last row when the list is cut: selecting it shows more conversations."""

    def compose(self) -> ComposeResult:
        yield Static("… more", classes="conv-text")


class Sidebar(Vertical):
    """The list of saved conversations, with a search box above it."""

    BINDINGS = [
        Binding("r", "rename", "Rename", id="sidebar.rename"),
        Binding("a", "archive", "Archive/restore", id="sidebar.archive"),
        Binding("delete,d", "delete", "Delete", id="sidebar.delete"),
        Binding("v", "toggle_archived", "Archive view", id="sidebar.toggle_archived"),
    ]

    show_archived: reactive[bool] = reactive(False, init=False)

    class Open(Message):
        """The user picked a conversation to open."""

        def __init__(self, conversation_id: int) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    class Action(Message):
        """The user asked to rename / archive / delete a conversation."""

        def __init__(self, action: str, conversation_id: int) -> None:
            super().__init__()
            self.action = action
            self.conversation_id = conversation_id

    def __init__(self, history: HistoryStore, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.history = history
        self.current_id: int | None = None
        self.limit = LIST_PAGE
        self._search_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search chats", id="search")
        yield Static("Chats", id="list-heading", markup=False)
        yield ListView(id="conversations")

    def on_mount(self) -> None:
        self.reload()

    @property
    def query_text(self) -> str:
        """What is typed in the search box."""
        return self.query_one("#search", Input).value.strip()

    def reload(self) -> AwaitComplete:
        """Redraw the list (or the search results) from the history store.

        Returns an optionally-awaitable: await it for the list to hold only the new items (the
        old ones are removed and the new ones mounted a moment later)."""
        list_view = self.query_one("#conversations", ListView)
        heading = self.query_one("#list-heading", Static)
        items: list[ListItem] = []
        query = self.query_text
        if query:
            hits = self.history.search(query, limit=50, mark=_MARK)
            seen: set[int] = set()
            for hit in hits:
                if hit.conversation_id in seen:
                    continue
                seen.add(hit.conversation_id)
                items.append(ConversationItem(hit.conversation_id, hit.title or "New conversation",
                                              _snippet(hit.snippet)))
            heading.update(f"Search: {len(items)} chat{'s' if len(items) != 1 else ''}")
        else:
            summaries = self.history.list_conversations(
                archived_only=self.show_archived, limit=self.limit + 1
            )
            more = len(summaries) > self.limit
            for s in summaries[: self.limit]:
                detail = f"{format_time(s.updated_at)} · {s.message_count} msg"
                items.append(ConversationItem(s.id, s.display_title, detail, archived=s.archived))
            heading.update("Archive (v: back to chats)" if self.show_archived else "Chats")
            if more:
                items.append(MoreItem())
        index = None
        for n, item in enumerate(items):
            if isinstance(item, ConversationItem) and item.conversation_id == self.current_id:
                item.add_class("current")
                index = n
        with self.app.batch_update():
            removed = list_view.clear()
            mounted = list_view.extend(items)
            if index is not None:
                list_view.index = index
        return AwaitComplete(removed, mounted)

    def watch_show_archived(self) -> None:
        self.reload()

    def set_current(self, conversation_id: int | None) -> None:
        """Mark the open conversation in the list."""
        self.current_id = conversation_id
        for item in self.query(ConversationItem):
            item.set_class(item.conversation_id == conversation_id, "current")

    @on(Input.Changed, "#search")
    def _search_changed(self) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        self._search_timer = self.set_timer(0.15, self.reload)

    @on(Input.Submitted, "#search")
    def _search_submitted(self) -> None:
        self.reload()
        list_view = self.query_one("#conversations", ListView)
        list_view.focus()
        if list_view.index is None and list_view.children:
            list_view.index = 0

    @on(ListView.Selected, "#conversations")
    def _selected(self, event: ListView.Selected) -> None:
        if isinstance(event.item, ConversationItem):
            self.post_message(self.Open(event.item.conversation_id))
        elif isinstance(event.item, MoreItem):
            self.limit += LIST_PAGE
            self.reload()

    def highlighted_id(self) -> int | None:
        """The conversation under the list cursor."""
        item = self.query_one("#conversations", ListView).highlighted_child
        return item.conversation_id if isinstance(item, ConversationItem) else None

    def _act(self, action: str) -> None:
        conversation_id = self.highlighted_id()
        if conversation_id is not None:
            self.post_message(self.Action(action, conversation_id))

    def action_rename(self) -> None:
        self._act("rename")

    def action_archive(self) -> None:
        self._act("archive")

    def action_delete(self) -> None:
        self._act("delete")

    def action_toggle_archived(self) -> None:
        self.show_archived = not self.show_archived
