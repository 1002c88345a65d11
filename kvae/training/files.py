"""Files written whole or not at all.

Every file kvae keeps across a kill (a run's model, configuration and history, checkpoints, the best
weights) is written to a temporary file beside its target, flushed to disk (``fsync``) and renamed
over the target (``os.replace``, atomic), the rename itself flushed with the directory: a kill, a
full disk or a failing writer leaves the previous file or the new one, never part of one, and no
temporary file.

:func:`atomic_write` is the whole sequence for any writer; :func:`write_bytes`, :func:`write_text`,
:func:`write_json`, :func:`save_model` and :func:`save_weights` are it for what kvae writes.
:func:`write_flushed` and :func:`replace` are its two halves, for a caller that commits several
files together (:class:`kvae.training.checkpoint.SafeBackupAndRestore`'s checkpoint pair).

A full disk: :func:`check_free_space` refuses a write that would not fit (HDF5 writers crashed here
with a segmentation fault when the disk filled during a write), and :func:`describe_write_error`
names the disk of a failed write in one line.
"""
import errno
import json
import os
import shutil


def _fsync_path(path, directory=False):
    fd = os.open(path, os.O_RDONLY if directory else os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _text_writer(text, mode="w"):
    def write(path):
        with open(path, mode) as f:
            f.write(text)

    return write


def write_flushed(path, write):
    """Write ``path`` (``write(path)``, or ``write`` itself when it is a str or bytes), then flush it to
    disk."""
    if isinstance(write, (str, bytes)):
        write = _text_writer(write, "w" if isinstance(write, str) else "wb")
    write(path)
    _fsync_path(path)


def replace(src, dst):
    """Rename the complete file ``src`` over ``dst`` (atomic) and flush the directory, so the rename
    survives a crash."""
    os.replace(src, dst)
    try:
        _fsync_path(os.path.dirname(os.path.abspath(dst)), directory=True)
    except OSError:  # a file system (or Windows) that cannot flush a directory: the rename still happened
        pass


def atomic_write(path, write, suffix=".tmp"):
    """Write ``path`` whole or not at all: ``write(tmp)`` writes ``tmp = path + suffix`` (keep the ending
    a writer checks, e.g. ``".tmp.keras"``; ``write`` may also be the str or bytes to write), which is
    flushed and renamed over ``path``; if anything fails, ``path`` is left as it was and ``tmp`` is
    removed."""
    tmp = path + suffix
    try:
        write_flushed(tmp, write)
        replace(tmp, path)
    finally:
        remove_if_present(tmp)


def write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    atomic_write(path, bytes(data))


def write_text(path, text):
    """Write ``text`` (str) to ``path`` atomically."""
    atomic_write(path, str(text))


def write_json(path, obj, **dumps_kwargs):
    """Write ``obj`` as JSON (``json.dumps(obj, **dumps_kwargs)``) to ``path`` atomically; an object that
    does not serialise raises before any file is touched."""
    write_text(path, json.dumps(obj, **dumps_kwargs))


def save_model(model, path):
    """``model.save(path)`` (a ``.keras`` file) atomically: a failed save leaves neither a partial file
    nor a changed ``path``."""
    atomic_write(path, model.save, suffix=".tmp.keras")


def save_weights(model, path):
    """``model.save_weights(path)`` (a ``.weights.h5`` file) atomically."""
    atomic_write(path, model.save_weights, suffix=".tmp.weights.h5")


#: room kept free beside a write that :func:`check_free_space` allows (other writers, file-system overhead)
FREE_SPACE_MARGIN = 1 << 20


def remove_if_present(path):
    """Delete the file at ``path``; nothing happens when there is none."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def mount_point(path):
    """The mount point of the file system that holds ``path`` (or would hold it)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def free_bytes(directory):
    """Bytes free to an unprivileged writer on the disk that holds ``directory``."""
    return shutil.disk_usage(mount_point(directory) if not os.path.exists(directory) else directory).free


def check_free_space(directory, needed, what):
    """Raise ``OSError(ENOSPC)`` before writing ``needed`` bytes (``what``, for the message) to
    ``directory`` when its disk has less than that plus :data:`FREE_SPACE_MARGIN` free."""
    free = free_bytes(directory)
    if free < needed + FREE_SPACE_MARGIN:
        raise OSError(errno.ENOSPC, f"{what} needs {_size(needed + FREE_SPACE_MARGIN)} free, "
                                    f"the disk has {_size(free)}", directory)


def _size(n):
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def describe_write_error(err, directory):
    """One line for an ``OSError`` of a write into ``directory``: a full disk names its mount point."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        detail = f" ({err.strerror})" if err.strerror and "needs" in err.strerror else ""
        return f"no space left on the disk {mount_point(directory)} (holding {directory}){detail}"
    text = " ".join(str(err).split()) or type(err).__name__
    return f"could not write to {directory}: {text}"
