"""Progress of long commands: Keras' bar on a terminal, otherwise (a log file, ``nohup``) a line at most
every ``every`` seconds and one at the end.  Keras' bar with ``verbose=2`` writes nothing before the end,
which is hours for a k = 1000 evaluation of a big model."""
import sys
import time


def _clock_text(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class LineProgress:
    """``update(done)`` writes ``{what}: done/total units (p%), r units/s, about h:mm:ss left`` to
    ``stream`` (``sys.stderr`` as it is when written, by default) when ``every`` seconds have passed since
    the last line, and ``... done in h:mm:ss`` once ``done`` reaches ``total``.  The rate is that since
    the first update with work done (so start-up, such as worker processes loading a model before the
    first batch, does not slow the estimate once a later update has come), until then since
    ``clock()`` at construction; the time in the last line counts from construction."""

    def __init__(self, total, unit, what, every=60.0, stream=None, clock=time.monotonic):
        self.total, self.unit, self.what, self.every = int(total), unit, what, float(every)
        self.stream, self.clock = stream, clock
        self.start = self.last = clock()
        self.first = None  # (time, done) of the first update with done > 0
        self.finished = False

    def _write(self, text):
        print(text, file=self.stream if self.stream is not None else sys.stderr, flush=True)

    def update(self, done):
        now = self.clock()
        if self.first is None and done > 0:
            self.first = (now, done)
        if self.finished or (done < self.total and now - self.last < self.every):
            return
        self.last, elapsed = now, now - self.start
        if done >= self.total:
            self.finished = True
            self._write(f"{self.what}: {done}/{self.total} {self.unit}s done in {_clock_text(elapsed)}")
            return
        t0, d0 = self.first if self.first is not None and done > self.first[1] else (self.start, 0)
        rate = (done - d0) / (now - t0) if now > t0 else 0.0
        left = f", about {_clock_text((self.total - done) / rate)} left" if rate > 0 else ""
        self._write(f"{self.what}: {done}/{self.total} {self.unit}s ({100 * done / max(self.total, 1):.0f}%), "
                    f"{rate:.3g} {self.unit}s/s{left}")


def progress(total, unit, what, every=60.0, stream=None):
    """Keras' ``Progbar`` when ``stream`` (default ``sys.stderr``) is a terminal, else a
    :class:`LineProgress` on it; both have ``update(done)``."""
    if (stream if stream is not None else sys.stderr).isatty():
        import keras

        return keras.utils.Progbar(total, unit_name=unit, verbose=1)
    return LineProgress(total, unit, what, every, stream)
