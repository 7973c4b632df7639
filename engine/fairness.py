"""Fair admission to the batch: per-tenant queues served round-robin.

The backend decodes at most ``capacity`` sequences at once (``llm.max_running``); requests past
that wait. Waiting in one FIFO lets a tenant that queued 100 requests delay everyone else's by
all of them. ``FairQueue`` keeps one FIFO per tenant and, whenever room frees up, grants the
head of the next tenant's queue in turn (a tenant that was just served goes to the back of the
order). A tenant with one waiting request is therefore served within one round, however many
the others queued. Work-conserving: while nobody waits, a request is granted at once.

Runs on the event loop (not thread-safe). A waiter that is cancelled (client gone, deadline)
leaves its queue; one cancelled after being granted gives its room back.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque


class FairQueue:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.used = 0
        # Tenant -> its waiting (sequences, future), in round-robin order (next served first).
        self._queues: OrderedDict[str, deque[tuple[int, asyncio.Future[None]]]] = OrderedDict()

    @property
    def waiting(self) -> int:
        """Requests waiting for room."""
        return sum(len(q) for q in self._queues.values())

    async def acquire(self, tenant: str, n: int = 1) -> int:
        """Wait for room for ``n`` sequences (at most ``capacity``) of ``tenant``; returns the
        room taken, which the caller gives back with :meth:`release` when they finish."""
        n = min(max(n, 1), self.capacity)
        if not self._queues and self.used + n <= self.capacity:
            self.used += n
            return n
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(tenant, deque()).append((n, future))
        self._grant()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(n)  # granted, then cancelled before it could be used
            else:
                self._forget(tenant, future)
            raise
        return n

    def release(self, n: int) -> None:
        self.used -= n
        self._grant()

    def _grant(self) -> None:
        while self._queues:
            tenant, queue = next(iter(self._queues.items()))
            n, future = queue[0]
            if future.cancelled():
                queue.popleft()
                if not queue:
                    del self._queues[tenant]
                continue
            if self.used + n > self.capacity:
                return  # the next in turn waits for room (no overtaking: no starvation)
            queue.popleft()
            self.used += n
            future.set_result(None)
            if queue:
                self._queues.move_to_end(tenant)  # served: to the back of the order
            else:
                del self._queues[tenant]

    def _forget(self, tenant: str, future: asyncio.Future[None]) -> None:
        queue = self._queues.get(tenant)
        if queue is None:
            return
        for item in list(queue):
            if item[1] is future:
                queue.remove(item)
        if not queue:
            del self._queues[tenant]
        self._grant()
