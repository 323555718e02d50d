"""One decode thread that serves every request, batching them together (continuous batching).

Requests wait in a bounded queue. Between two decode steps the thread drops cancelled requests and admits
waiting ones (prefilled together, a chunk of their prompts per step while others decode, then merged into
the running batch); then one step gives every running sequence its next token.
Text reaches each request's asyncio queue through its event loop, so HTTP handlers stay non-blocking.

The decode thread uses all cores but one for torch by default: the HTTP event loop and its clients need a
core too, and torch's worker threads spin-wait at every operation, so one of them losing its core to the
event loop stalls the whole step. On the 2-core machine one streamed request decodes 1.5x faster this way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import torch

from ..infer.engine import Batch, Engine, Prefill, Sequence

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """Every batch slot and queue place is taken; the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(eq=False)
class Job:
    """A request's sequences (its n choices, prefilled once) and the channel their text travels back on.

    The channel carries `(choice index, text)`, `(choice index, None)` when that choice has finished, and a
    final None when the whole job is over (finished, cancelled or failed).
    """

    seqs: list[Sequence]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    error: str | None = None

    def _send(self, item: tuple[int, str | None] | None) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def deltas(self) -> AsyncIterator[tuple[int, str | None]]:
        """(index, text piece) as they are produced and (index, None) as each choice ends, until the job ends."""
        while (item := await self.queue.get()) is not None:
            yield item


class Scheduler:
    """Owns the decode thread. `submit` enqueues, `cancel` frees a slot as soon as the step ends.

    Waiting jobs are admitted in arrival order, as many at a time as free rows and `max_prefill_tokens`
    (prompt tokens prefilled per step, padding included) allow, and prefilled `max_prefill_tokens` at a time
    (a long prompt in chunks); every step then gives each running sequence one token, so a stream waits at
    most one capped prefill between two of its tokens.
    """

    def __init__(
        self,
        engine: Engine,
        max_batch: int,
        max_queue: int,
        threads: int | None,
        max_prefill_tokens: int,
    ) -> None:
        self.engine, self.max_batch, self.max_queue = engine, max_batch, max_queue
        self.max_prefill_tokens = max_prefill_tokens
        self.threads = threads or max(1, (os.cpu_count() or 1) - 1)
        self._waiting: deque[Job] = deque()
        self._cancelled: set[Job] = set()
        self._jobs: dict[int, tuple[Job, int]] = {}  # id(seq) -> (its job, its choice index)
        self._live = 0  # jobs submitted and not yet over
        self._finished: deque[float] = deque(maxlen=64)  # when the last jobs finished, for Retry-After
        self._cond = threading.Condition()
        self._stopping = False
        self._batch = Batch(engine)
        self._prefill: Prefill | None = None  # admitted jobs' prompts being read, a chunk per step
        self._thread = threading.Thread(target=self._run, name="tinylm-decode", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    @property
    def counts(self) -> dict[str, int]:
        """How many requests are decoding and how many wait, for /health."""
        with self._cond:
            waiting = len(self._waiting)
            return {"running": self._live - waiting, "waiting": waiting}

    def submit(self, seqs: list[Sequence]) -> Job:
        """Queue one request's sequences (at most `max_batch`); raise QueueFull when batch and queue are full."""
        job = Job(seqs, asyncio.get_running_loop())
        with self._cond:
            if self._live >= self.max_batch + self.max_queue:
                raise QueueFull(
                    f"the server is busy: {self._live - len(self._waiting)} requests decoding and "
                    f"{len(self._waiting)} waiting (max_queue={self.max_queue})",
                    self._retry_after(),
                )
            for i, seq in enumerate(seqs):
                self._jobs[id(seq)] = (job, i)
            self._live += 1
            self._waiting.append(job)
            self._cond.notify()
        return job

    def _retry_after(self) -> int:
        """Seconds until the waiting jobs have likely been admitted: their number over the rate at which jobs
        finished lately (one batchful per second until two have finished); at least 1."""
        done = self._finished
        if len(done) >= 2 and done[-1] > done[0]:
            rate = (len(done) - 1) / (done[-1] - done[0])
        else:
            rate = float(self.max_batch)
        return max(1, math.ceil(len(self._waiting) / rate))

    def cancel(self, job: Job) -> None:
        """Stop decoding `job` (its client left); a no-op once it has finished."""
        with self._cond:
            if id(job.seqs[0]) in self._jobs:
                self._cancelled.add(job)
                self._cond.notify()

    def _admissions(self) -> list[Job]:
        """The waiting jobs to prefill now, from the front of the queue (called holding the lock)."""
        room = self.max_batch - len(self._batch.seqs)
        admit: list[Job] = []
        longest = 0
        while self._waiting and len(self._waiting[0].seqs) <= room:
            job = self._waiting[0]
            longest = max(longest, len(job.seqs[0].prompt_ids))
            if admit and (len(admit) + 1) * longest > self.max_prefill_tokens:
                break
            admit.append(self._waiting.popleft())
            room -= len(job.seqs)
        return admit

    def _run(self) -> None:
        torch.set_num_threads(self.threads)
        while True:
            with self._cond:
                while not (self._waiting or self._batch.seqs or self._cancelled or self._stopping):
                    if self._prefill is not None:  # a prompt still being read in chunks
                        break
                    self._cond.wait()
                if self._stopping:
                    return
                cancelled, self._cancelled = self._cancelled, set()
                self._waiting = deque(j for j in self._waiting if j not in cancelled)
                admit = self._admissions() if self._prefill is None else []
            try:
                for job in cancelled:
                    for seq in job.seqs:
                        self._batch.cancel(seq)
                    self._finish(job)
                outputs = self._prefill_some(admit)
                if self._batch.seqs:
                    outputs += self._batch.step()
            except Exception as e:  # a bug, not a user mistake: fail the batch, keep serving
                log.exception("decode step failed")
                self._fail(str(e) or type(e).__name__)
                continue
            over = []  # jobs whose last choice ended in this step (several of its choices may end together)
            for seq, delta in outputs:
                job, i = self._jobs[id(seq)]
                if delta:
                    job._send((i, delta))
                if seq.finished:
                    job._send((i, None))
                    if all(s.finished for s in job.seqs) and job not in over:
                        over.append(job)
            for job in over:
                self._finish(job)

    def _prefill_some(self, admit: list[Job]) -> list[tuple[Sequence, str]]:
        """Start prefilling the admitted jobs, or go on with the prefill under way: while other sequences
        decode, `max_prefill_tokens` prompt tokens (padding included) a step, so a long prompt reaches them as
        chunks between their tokens; with nothing else running, all of it at once. Sequences whose prefill
        ends join the batch, with their first tokens."""
        if admit:
            self._prefill = Prefill(self.engine.model, [s for job in admit for s in job.seqs])
        if self._prefill is None or all(s.finished for s in self._prefill.seqs):  # none, or all cancelled
            self._prefill = None
            return []
        rows = self._prefill.ids.shape[0]
        self._prefill.feed(max(1, self.max_prefill_tokens // rows) if self._batch.seqs else None)
        if not self._prefill.finished:
            return []
        prefill, self._prefill = self._prefill, None
        return self._batch.join(prefill)

    def _finish(self, job: Job) -> None:
        with self._cond:
            live = self._jobs.pop(id(job.seqs[0]), None) is not None
            if live:
                for seq in job.seqs[1:]:
                    del self._jobs[id(seq)]
                self._live -= 1
                self._finished.append(time.monotonic())
        if live:
            job._send(None)

    def _fail(self, message: str) -> None:
        with self._cond:
            failed = {job for job, _ in self._jobs.values() if job not in self._waiting}
        for job in failed:
            job.error = message
            self._finish(job)
        self._batch, self._prefill = Batch(self.engine), None
