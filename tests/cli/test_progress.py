"""Progress written to a log: a line at most every `every` seconds with the rate and the time left, and one at
the end (Keras' bar with verbose=2 wrote nothing until the end: hours for a k = 1000 evaluation)."""
import io

from kvae.cli import progress


def test_a_line_every_interval_with_rate_and_time_left_and_one_at_the_end():
    now = [100.0]
    out = io.StringIO()
    bar = progress.LineProgress(1000, "example", "NLL", every=60, stream=out, clock=lambda: now[0])
    for t, done in [(30, 100), (61, 200), (90, 300), (200, 500), (230, 600), (400, 1000), (401, 1000)]:
        now[0] = 100.0 + t
        bar.update(done)
    assert out.getvalue().splitlines() == [
        "NLL: 200/1000 examples (20%), 3.23 examples/s, about 0:04:08 left",  # 800 left at 100/31 per second
        "NLL: 500/1000 examples (50%), 2.35 examples/s, about 0:03:32 left",  # 500 left at 400/170 per second
        "NLL: 1000/1000 examples done in 0:06:40",
    ]


def test_start_up_before_the_first_batch_does_not_slow_the_estimate():
    """Workers load a model for minutes before the first batch is done: the rate (and the time left) is
    measured from the first update with work done, the total time from the start."""
    now = [0.0]
    out = io.StringIO()
    bar = progress.LineProgress(1000, "example", "NLL", every=60, stream=out, clock=lambda: now[0])
    for t, done in [(400, 100), (500, 200), (600, 300), (1300, 1000)]:  # 300 s start-up, then 1 example/s
        now[0] = t
        bar.update(done)
    assert out.getvalue().splitlines() == [
        "NLL: 100/1000 examples (10%), 0.25 examples/s, about 1:00:00 left",  # nothing better known yet
        "NLL: 200/1000 examples (20%), 1 examples/s, about 0:13:20 left",
        "NLL: 300/1000 examples (30%), 1 examples/s, about 0:11:40 left",
        "NLL: 1000/1000 examples done in 0:21:40",
    ]


def test_a_terminal_gets_keras_bar_and_a_file_lines_every_minute_on_stderr(capsys):
    import keras

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert isinstance(progress.progress(10, "step", "x", stream=Terminal()), keras.utils.Progbar)
    now = [0.0]
    bar = progress.progress(10, "step", "metrics")
    assert isinstance(bar, progress.LineProgress)
    bar.clock = lambda: now[0]
    bar.start = bar.last = 0.0
    for t, done in [(59.9, 1), (60.0, 2), (61.0, 10)]:
        now[0] = t
        bar.update(done)
    assert capsys.readouterr().err.splitlines() == ["metrics: 2/10 steps (20%), 10 steps/s, about 0:00:01 left",
                                                    "metrics: 10/10 steps done in 0:01:01"]
