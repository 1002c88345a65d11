"""One writer per run directory: ``kvae train`` holds ``RUN_DIR/train.lock`` while it runs.

The lock is ``fcntl.flock`` on that file, which the kernel releases when the holding process ends, however
it ends (a SIGKILL included): a lock left by a dead process never blocks the next run.  The file
holds the holder's pid, host, command and start time, which the refused process names.
"""
import datetime
import json
import os
import shlex
import socket
import sys

from kvae.errors import RunError

try:
    import fcntl
except ImportError:  # not a POSIX system: runs are not locked
    fcntl = None

LOCK_FILE = "train.lock"


def _command():
    argv = list(sys.argv) or ["python"]
    if argv[0].endswith(os.path.join("kvae", "cli", "__main__.py")) or os.path.basename(argv[0]) == "kvae":
        argv[0] = "kvae"
    return shlex.join(argv)


def _holder_text(raw):
    try:
        holder = json.loads(raw)
        return (f"pid {holder['pid']} on {holder['host']} since {holder['since']}: "
                f"{holder['command']}")
    except (ValueError, KeyError, TypeError):
        return "a process that has not said which yet"


class RunLock:
    """``with RunLock(run_dir):`` holds the run directory's lock or raises :class:`kvae.errors.RunError`
    naming the process that holds it."""

    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_FILE)
        self._fd = None

    def acquire(self):
        if fcntl is None:
            return self
        self._made = not os.path.exists(self.directory)
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            with os.fdopen(fd, "r") as f:
                raw = f.read()
            raise RunError(f"{self.directory} is in use by another training run ({_holder_text(raw)}); "
                           "wait for it to end or choose another --out") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(),
                  "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd
        return self

    def release(self):
        if self._fd is not None:
            if getattr(self, "_made", False) and os.listdir(self.directory) == [LOCK_FILE]:
                # a run that stopped before writing anything (a bad option) leaves no directory behind
                os.remove(self.path)
                os.rmdir(self.directory)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
