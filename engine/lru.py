"""A dict that keeps at most ``maxsize`` entries, evicting the least recently used.

Per-tenant caches (trained classifiers, inline workflow classifiers, chunkers) grow with what
tenants create; bounded, a tenant with many of them costs reloads, not the server's memory.
Not thread-safe: use it from the event loop (or under the owner's lock).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(OrderedDict[K, V]):
    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("an LRU cache needs room for at least one entry")
        super().__init__()
        self.maxsize = maxsize

    def __getitem__(self, key: K) -> V:
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)
