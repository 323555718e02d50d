"""One decode thread that serves every request, batching them together (continuous batching).

Requests wait in a bounded queue. Between two decode steps the thread admits waiting requests (prefilled
together, then merged into the running batch), drops cancelled ones, and runs one step for all the rest.
Text reaches each request's asyncio queue through its event loop, so HTTP handlers stay non-blocking.

The decode thread uses all cores but one for torch by default: the HTTP event loop and its clients need a
core too, and torch's worker threads spin-wait at every operation, so one of them losing its core to the
event loop stalls the whole step. On the 2-core machine one streamed request decodes 1.5x faster this way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import torch

from ..infer.engine import Batch, Engine, Sequence

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """Every batch slot and queue place is taken; the client should retry later."""


@dataclass(eq=False)
class Job:
    """A sequence being served, and the channel its text travels back on (None marks the end)."""

    seq: Sequence
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    error: str | None = None

    def _send(self, item: str | None) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def deltas(self) -> AsyncIterator[str]:
        """The text pieces as they are produced, until the sequence ends."""
        while (item := await self.queue.get()) is not None:
            yield item


class Scheduler:
    """Owns the decode thread. `submit` enqueues, `cancel` frees a slot as soon as the step ends."""

    def __init__(
        self, engine: Engine, max_batch: int = 8, max_queue: int = 32, threads: int | None = None
    ) -> None:
        self.engine, self.max_batch, self.max_queue = engine, max_batch, max_queue
        self.threads = threads or max(1, (os.cpu_count() or 1) - 1)
        self._waiting: deque[Job] = deque()
        self._cancelled: set[Job] = set()
        self._requests: dict[int, Job] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._batch = Batch(engine)
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
            return {"running": len(self._requests) - waiting, "waiting": waiting}

    def submit(self, seq: Sequence) -> Job:
        """Queue `seq` for decoding; raise QueueFull when batch and queue are both full."""
        req = Job(seq, asyncio.get_running_loop())
        with self._cond:
            if len(self._requests) >= self.max_batch + self.max_queue:
                raise QueueFull(
                    f"the server is busy: {self.max_batch} requests decoding and {self.max_queue} waiting"
                )
            self._requests[id(seq)] = req
            self._waiting.append(req)
            self._cond.notify()
        return req

    def cancel(self, req: Job) -> None:
        """Stop decoding `req` (its client left); a no-op once it has finished."""
        with self._cond:
            if id(req.seq) in self._requests:
                self._cancelled.add(req)
                self._cond.notify()

    def _run(self) -> None:
        torch.set_num_threads(self.threads)
        while True:
            with self._cond:
                while not (self._waiting or self._batch.seqs or self._cancelled or self._stopping):
                    self._cond.wait()
                if self._stopping:
                    return
                cancelled, self._cancelled = self._cancelled, set()
                self._waiting = deque(r for r in self._waiting if r not in cancelled)
                room = self.max_batch - len(self._batch.seqs)
                admit = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
            for req in cancelled:
                self._batch.cancel(req.seq)
                self._finish(req)
            try:
                if admit:
                    outputs = self._batch.add([r.seq for r in admit])
                elif self._batch.seqs:
                    outputs = self._batch.step()
                else:
                    continue
            except Exception as e:  # a bug, not a user mistake: fail the batch, keep serving
                log.exception("decode step failed")
                self._fail(str(e) or type(e).__name__)
                continue
            for seq, delta in outputs:
                req = self._requests[id(seq)]
                if delta:
                    req._send(delta)
                if seq.finished:
                    self._finish(req)

    def _finish(self, req: Job) -> None:
        with self._cond:
            live = self._requests.pop(id(req.seq), None) is not None
        if live:
            req._send(None)

    def _fail(self, message: str) -> None:
        with self._cond:
            failed = [r for r in self._requests.values() if r not in self._waiting]
        for req in failed:
            req.error = message
            self._finish(req)
        self._batch = Batch(self.engine)
