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
        self.pending, self.rows, self._timer = [], 0, None

    async def submit(self, arrays):
        """The outputs of ``arrays`` (inputs of ``rows`` examples), run alone or stacked with others."""
        rows = len(next(iter(arrays.values())))
        if self.max_batch <= 1 or rows >= self.max_batch:
            self.observe(rows)
            return await self.run(self.endpoint, arrays)
        future = asyncio.get_running_loop().create_future()
        self.pending.append((arrays, rows, future))
        self.rows += rows
        if self.rows >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_wait, self._flush)
        return await future

    def _flush(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.pending:
            taken, rows = [], 0
            while self.pending and rows + self.pending[0][1] <= self.max_batch:
                item = self.pending.pop(0)
                taken.append(item)
                rows += item[1]
            self.rows -= rows
            asyncio.get_running_loop().create_task(self._run(taken, rows))
            if self.rows < self.max_batch:
                break
        if self.pending:
            self._timer = asyncio.get_running_loop().call_later(self.max_wait, self._flush)

    async def _run(self, items, rows):
        self.observe(rows)
        names = list(items[0][0])
        stacked = {n: np.concatenate([arrays[n] for arrays, _, _ in items]) for n in names}
        try:
            outputs = await self.run(self.endpoint, stacked)
        except Exception as err:  # every request of the batch gets the error
            for _, _, future in items:
                if not future.done():
                    future.set_exception(err)
            return
        cuts = np.cumsum([r for _, r, _ in items])[:-1]
        parts = {name: np.split(value, cuts) for name, value in outputs.items()}
        for i, (_, _, future) in enumerate(items):
            if not future.done():
                future.set_result({name: pieces[i] for name, pieces in parts.items()})
