"""Per-tenant caches are bounded: the least recently used entry goes first."""

from __future__ import annotations

import pytest

from engine.documents import CACHED_CHUNKERS
from engine.lru import LRU
from engine.tasks.classifiers import CACHED_CLASSIFIERS, ClassifierService


def test_least_recently_used_goes_first() -> None:
    cache: LRU[str, int] = LRU(2)
    cache["a"], cache["b"] = 1, 2
    assert cache["a"] == 1  # a is now the most recent
    cache["c"] = 3
    assert list(cache) == ["a", "c"] and "b" not in cache
    cache["a"] = 10
    cache["d"] = 4
    assert dict(cache) == {"a": 10, "d": 4}
    with pytest.raises(ValueError):
        LRU(0)


def test_the_services_caches_are_bounded() -> None:
    service = ClassifierService(None, None, None, None, None)  # type: ignore[arg-type]
    for i in range(CACHED_CLASSIFIERS + 10):
        service._classifiers[("tenant", f"c{i}", 1)] = object()  # type: ignore[assignment]
    assert len(service._classifiers) == CACHED_CLASSIFIERS
    assert ("tenant", "c0", 1) not in service._classifiers
    assert CACHED_CHUNKERS >= 1
