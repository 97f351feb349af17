"""What is far above the view stands aside while a reply streams.

Textual walks every mounted widget on each layout (placing it, telling it its size), and a
streaming reply is laid out a few times a second. That walk over widgets nobody sees costs
more than drawing the reply: with 50 earlier turns on screen it doubled the app's CPU, and a
long reply's own finished part made each write dearer as the reply grew. So while a reply
streams, the leading run of a container's children (earlier messages in the transcript,
finished segments in the reply) that lies well above the view is hidden, and one empty widget
of exactly their height takes their place: the scroll range, the scroll bar and every visible
line stay the same. They come back when the reply ends, when the user scrolls up towards
them, or when the width changes.
"""

from __future__ import annotations

import asyncio

from textual.geometry import Size
from textual.widget import Widget

#: Collapse only when at least this many widgets would go (fewer are not worth a layout).
MIN_COLLAPSED = 2
#: Keep this many screen heights above the view as they are.
KEEP_SCREENS = 2


class CollapsedSpace(Widget):
    """An empty stand-in, ``lines`` high, for widgets hidden while a reply streams."""

    # The height comes from get_content_height: a transcript with ``layout: stream`` reads
    # neither inline styles nor fixed heights.
    DEFAULT_CSS = "CollapsedSpace { height: auto; }"

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.lines = lines

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return self.lines

    def render(self) -> str:
        return ""


class Collapser:
    """Hides, and later brings back, the leading children of ``container`` that lie well
    above the view of ``scroller`` (the scrolling widget that shows them)."""

    def __init__(self, container: Widget, scroller: Widget, min_collapsed: int = MIN_COLLAPSED
                 ) -> None:
        self.container = container
        self.scroller = scroller
        self.min_collapsed = min_collapsed
        self.spacer: CollapsedSpace | None = None
        self.hidden: list[Widget] = []
        self._width = 0
        self._top = 0  # where the spacer starts in the scroller's content (lines)
        self._lock = asyncio.Lock()  # a collapse and an expand never interleave
        self._closed = False

    @property
    def collapsed(self) -> bool:
        return self.spacer is not None

    async def collapse(self) -> bool:
        """Hide the leading children that end more than :data:`KEEP_SCREENS` screens above
        the view (more of them, if some are hidden already); True if any were hidden."""
        async with self._lock:
            if self._closed:
                return False
            return await self._collapse()

    async def _collapse(self) -> bool:
        container, scroller = self.container, self.scroller
        if not container.is_mounted or not scroller.size:
            return False
        limit = scroller.region.y - KEEP_SCREENS * scroller.size.height
        children = [c for c in container.children if c is not self.spacer and c.display]
        more: list[Widget] = []
        for child in children:
            region = child.region
            if not region or region.bottom >= limit:
                break
            more.append(child)
        if len(more) < self.min_collapsed or len(more) == len(children):
            return False
        kept = children[len(more)]
        if not kept.virtual_region:  # not laid out yet
            return False
        # The spacer is the first child (no margins): it spans everything down to the first
        # kept widget's top margin, so the kept ones stay exactly where they are.
        lines = kept.virtual_region.y - kept.styles.margin.top
        with container.app.batch_update():
            if self.spacer is None:
                self.spacer = CollapsedSpace(lines)
                await container.mount(self.spacer, before=0)
            else:
                self.spacer.lines = lines
                self.spacer.refresh(layout=True)
            for child in more:
                child.display = False
        self.hidden.extend(more)
        self._width = scroller.size.width
        if container is scroller:
            self._top = 0
        else:
            self._top = round(container.content_region.y - scroller.content_region.y
                              + scroller.scroll_y)
        return True

    async def expand(self, *, close: bool = False) -> None:
        """Bring the hidden children back; with ``close``, for good (later collapses do
        nothing)."""
        if close:
            self._closed = True
        async with self._lock:
            await self._expand()

    async def _expand(self) -> None:
        spacer, hidden = self.spacer, self.hidden
        self.spacer, self.hidden = None, []
        if spacer is None:
            return
        with self.container.app.batch_update():
            for child in hidden:
                if child.is_mounted:
                    child.display = True
            if spacer.is_mounted:
                await spacer.remove()

    def forget(self) -> None:
        """Drop the bookkeeping (the container's children are being replaced)."""
        self.spacer, self.hidden = None, []

    def should_expand(self) -> bool:
        """Whether the view came within a screen of the hidden children, or the width
        changed (their height would not be right any more)."""
        spacer = self.spacer
        if spacer is None:
            return False
        scroller = self.scroller
        if scroller.size.width != self._width or not spacer.is_mounted:
            return True
        # In the scroller's content, not on screen: this runs as the scroll offset changes,
        # before the next layout moves the widgets.
        top, height = scroller.scroll_y, scroller.size.height
        return self._top + spacer.lines > top - height and self._top < top + 2 * height
