"""Giving memory back to the system after large request bodies (glibc's allocator; elsewhere a no-op).

Two habits of glibc's malloc kept a burst of large bodies resident long after it was over (measured:
20 bodies of 30 MB took a worker from 81 to 862 MB, and 562 MB stayed):

- its mmap threshold is dynamic: once a large block (a body) that was mmapped is freed, the
  threshold rises to that block's size (up to 32 MB), and the next bodies are carved from the heap
  instead, whose free space goes back only from its top. :func:`tune` fixes the threshold at
  :data:`MMAP_THRESHOLD`: every larger block is its own mapping, returned when it is freed;
- the worker threads that parse large bodies each get an arena of their own, whose freed pages
  stay until ``malloc_trim``. :class:`Trimmer` calls it once the bodies held at once have fallen
  well below their peak (the end of a burst), at most every :data:`POLL_SECONDS`; it looks only
  while bodies of :data:`TRIM_AFTER_BYTES` or more were held (a worker without large bodies pays
  no timer for it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("proxycast")

MMAP_THRESHOLD = 1024 * 1024
"""Blocks at least this large are mapped on their own (and unmapped when freed)."""
TRIM_AFTER_BYTES = 16 * 1024 * 1024
"""A burst worth trimming after: the body bytes held at its peak fell by at least this much."""
POLL_SECONDS = 0.25
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None  # not glibc (musl has neither)
    return libc


_LIBC = _libc()


def tune() -> None:
    """Fix glibc's mmap threshold (see the module docstring); once per worker process."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def trim() -> None:
    """Return the allocator's free pages to the system (``malloc_trim(0)``)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class Trimmer:
    """Trims after a burst of large bodies: when the body bytes held (``held()``) have fallen by
    :data:`TRIM_AFTER_BYTES` from their peak since the last trim."""

    def __init__(self, held: Callable[[], int]) -> None:
        self._held = held
        self._peak = 0
        self._burst = trio.Event()

    def wake(self) -> None:
        """Bodies of :data:`TRIM_AFTER_BYTES` or more are held: a burst to watch until it ends."""
        self._burst.set()

    def check(self) -> bool:
        """Trim if a burst is over; whether it did."""
        held = self._held()
        if held > self._peak:
            self._peak = held
            return False
        if self._peak - held < TRIM_AFTER_BYTES:
            return False
        self._peak = held
        trim()
        return True

    async def run(self) -> None:
        """:meth:`check` every :data:`POLL_SECONDS` from a :meth:`wake` until no burst is left to
        trim after (the peak seen is below :data:`TRIM_AFTER_BYTES`), until cancelled."""
        while True:
            await self._burst.wait()
            await trio.sleep(POLL_SECONDS)
            self.check()
            if self._peak < TRIM_AFTER_BYTES:
                self._burst = trio.Event()
