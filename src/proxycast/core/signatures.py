"""Signatures an upstream put on text parts (Gemini 3 signs an answer's text), kept by the gateway for
the clients whose API has no place for them.

A chat or Gemini client carries such a signature itself (``docs/mappings.md``, "Carriers"). An
Anthropic or Responses client cannot: its only carriers are a thinking block or a reasoning item, which
come before the text they led to, while Gemini streams the signature after the text; placing it would
mean holding the answer back, or a block after the answer (which made Claude Code print nothing). So
the gateway remembers each signed text by a digest of its text, and puts the signature back on that
text part when a client sends the text again in a later turn, converted for the upstream. Gemini does
not require these signatures (it checks those of function calls, which every dialect carries); sent
back, they keep its reasoning as it was.

The memory is per worker, bounded (the least recently used go first) and holds digests and
signatures, never text. Pure data: the exchange tells it what it saw.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import TYPE_CHECKING

import attrs

from proxycast.formats import internal

if TYPE_CHECKING:
    from collections.abc import Iterable

SIZE = 4096
"""Signed texts remembered per worker."""


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class TextSignatures:
    """Digest of a signed text -> its signature and the signature's source."""

    def __init__(self, size: int = SIZE) -> None:
        self._size = size
        self._known: OrderedDict[bytes, tuple[str, str | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._known)

    def remember(self, text: str, signature: str, source: str | None) -> None:
        if not text:
            return
        key = _digest(text)
        self._known[key] = (signature, source)
        self._known.move_to_end(key)
        while len(self._known) > self._size:
            self._known.popitem(last=False)

    def remember_replies(self, replies: Iterable[internal.Reply]) -> None:
        """The signed text parts of non-streamed answers."""
        for reply in replies:
            for part in reply.parts:
                if isinstance(part, internal.Text) and part.signature:
                    self.remember(part.text, part.signature, part.source)

    def restore(self, conversation: internal.Conversation) -> internal.Conversation:
        """``conversation`` with the remembered signature on each unsigned assistant text part
        whose text was signed (the same object when none was)."""
        if not self._known:
            return conversation
        messages = list(conversation.messages)
        changed = False
        for index, message in enumerate(messages):
            if message.role != "assistant":
                continue
            parts = list(message.parts)
            carried = {p.signature for p in parts if isinstance(p, internal.Reasoning)}
            signed = False
            for at, part in enumerate(parts):
                if not isinstance(part, internal.Text) or part.signature or not part.text:
                    continue
                known = self._known.get(_digest(part.text))
                if known is not None and known[0] not in carried:  # a chat client carries its own
                    parts[at] = attrs.evolve(part, signature=known[0], source=known[1])
                    signed = True
            if signed:
                messages[index] = attrs.evolve(message, parts=tuple(parts))
                changed = True
        return attrs.evolve(conversation, messages=tuple(messages)) if changed else conversation


class StreamedText:
    """Follows a converted stream's text parts to remember the signed ones (an upstream streams a
    part's signature after its text: on its last chunk, or on an empty one after it)."""

    __slots__ = ("_memory", "_pieces")

    def __init__(self, memory: TextSignatures) -> None:
        self._memory = memory
        self._pieces: list[str] = []

    def see(self, event: internal.StreamEvent) -> None:
        if isinstance(event, internal.TextDelta):
            if event.text:
                self._pieces.append(event.text)
            if event.signature:
                self._memory.remember("".join(self._pieces), event.signature, event.source)
                self._pieces.clear()
        elif self._pieces and not isinstance(event, (internal.Start, internal.Finish)):
            self._pieces.clear()  # another part began: the text before it went unsigned
