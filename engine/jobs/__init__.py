"""Durable jobs: one DuckDB-backed queue for every background job that must survive a restart.

:class:`~engine.jobs.queue.JobQueue` is the table's SQL (enqueue, lease, heartbeat, finish,
retry with backoff, dead letters, cancel); :class:`~engine.jobs.workers.Workers` runs the
registered handlers in the engine process. See docs/jobs.md.
"""

from engine.jobs.queue import JobQueue, QueueLimits
from engine.jobs.workers import Handler, JobCancelled, JobContext, Workers

__all__ = ["Handler", "JobCancelled", "JobContext", "JobQueue", "QueueLimits", "Workers"]
