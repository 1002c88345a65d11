"""Dynamic micro-batching per endpoint (as Triton's dynamic batcher): requests that arrive while one
waits are stacked into one ``session.run`` of up to ``max_batch`` rows, or whatever arrived within
``max_wait_ms`` of the first, and the outputs are split back by rows."""
import asyncio

import numpy as np


class Runner:
    """Runs ``bundle.execute``: inline on the event loop when the run is short (its estimated time,
    rows x the endpoint's one-row time measured at load, is at most ``inline_seconds``: a thread hop
    would cost more), else on a thread of its own (onnxruntime releases the GIL, so the loop keeps
    reading and answering requests meanwhile; one run at a time per worker)."""

    def __init__(self, bundle, executor, inline_seconds=0.0005):
        self.bundle, self.executor, self.inline_seconds = bundle, executor, inline_seconds

    async def __call__(self, endpoint, arrays):
        rows = len(next(iter(arrays.values())))
        if rows * self.bundle.row_seconds.get(endpoint, 1.0) <= self.inline_seconds:
            return self.bundle.execute(endpoint, arrays)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.bundle.execute, endpoint, arrays)


class Batcher:
    """Stacks the prepared inputs of concurrent requests to one endpoint along axis 0.

    One stacked run at a time per endpoint: requests that arrive while it runs wait for it and go
    together in the next one (up to ``max_batch`` rows), so the batches grow with the load, as
    Triton's dynamic batcher does; an idle endpoint waits at most ``max_wait_ms`` after a request's
    arrival for others to join it.

    Args:
        endpoint: the endpoint's name.
        run: ``async run(endpoint, arrays) -> {output: array}``.
        max_batch: rows per stacked run (1 turns batching off: every request runs alone).
        max_wait_ms: how long the first request of a batch waits for others.
        observe: called with the rows of every run (the batch-size histogram).
    """

    def __init__(self, endpoint, run, max_batch, max_wait_ms, observe=None):
        self.endpoint, self.run, self.max_batch = endpoint, run, max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.observe = observe or (lambda rows: None)
        self.pending, self.rows, self.busy, self._timer = [], 0, False, None

    async def submit(self, arrays):
        """The outputs of ``arrays`` (inputs of ``rows`` examples), run alone or stacked with others."""
        rows = len(next(iter(arrays.values())))
        if self.max_batch <= 1 or rows >= self.max_batch:
            self.observe(rows)
            return await self.run(self.endpoint, arrays)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((arrays, rows, future, loop.time()))
        self.rows += rows
        if not self.busy:  # (a run in progress starts the next batch when it ends)
            self._schedule(loop)
        return await future

    def _schedule(self, loop):
        """Start a batch now if one is full or its first request has waited long enough, else at that time."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.pending:
            return
        due = self.pending[0][3] + self.max_wait
        if self.rows >= self.max_batch or loop.time() >= due:
            self._start(loop)
        else:
            self._timer = loop.call_at(due, self._start, loop)

    def _start(self, loop):
        self._timer = None
        taken, rows = [], 0
        while self.pending and (not taken or rows + self.pending[0][1] <= self.max_batch):
            item = self.pending.pop(0)
            taken.append(item)
            rows += item[1]
        self.rows -= rows
        self.busy = True
        loop.create_task(self._run(taken, rows))

    async def _run(self, items, rows):
        try:
            self.observe(rows)
            names = list(items[0][0])
            stacked = {n: np.concatenate([item[0][n] for item in items]) for n in names}
            outputs = await self.run(self.endpoint, stacked)
        except Exception as err:  # every request of the batch gets the error
            for item in items:
                if not item[2].done():
                    item[2].set_exception(err)
            return
        finally:
            self.busy = False
            self._schedule(asyncio.get_running_loop())
        cuts = np.cumsum([item[1] for item in items])[:-1]
        parts = {name: np.split(value, cuts) for name, value in outputs.items()}
        for i, item in enumerate(items):
            if not item[2].done():
                item[2].set_result({name: pieces[i] for name, pieces in parts.items()})
