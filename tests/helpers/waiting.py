"""Waiting on an event (a file written, a server answering) rather than on the clock.

The limit only stops a hung test: it is generous (minutes), never a speed requirement, and
running out of it fails with a message naming the event and what the process printed.
"""
import time


def wait_for(event, what, limit=900.0, process=None, poll=0.2):
    """Poll ``event()`` until it returns a true value; return that value.

    Args:
        event: callable returning a false value until the awaited thing has happened.
        what: the event in words, for the failure message.
        limit: seconds after which the test fails (a hang, not a slow machine).
        process: a ``subprocess.Popen`` the event depends on; its exit ends the wait.
        poll: seconds between calls.

    Returns:
        The first true value ``event()`` returned.

    Raises:
        AssertionError: ``process`` exited first, or ``limit`` passed.
    """
    end = time.monotonic() + limit
    while True:
        value = event()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"waiting for {what}: the process exited first (code {process.returncode})"
                                 f"{_output(process)}")
        if time.monotonic() > end:
            raise AssertionError(f"waiting for {what}: not seen in {limit:.0f} s (a hang?){_output(process)}")
        time.sleep(poll)


def _output(process):
    if process is None or process.poll() is None:
        return ""
    text = ""
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            out = stream.read()
            text += out.decode(errors="replace") if isinstance(out, bytes) else out
    return "; its output ends: " + text[-2000:] if text else ""
