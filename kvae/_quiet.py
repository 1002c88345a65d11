"""Keep TensorFlow's start-up noise off the user's terminal.

On a CPU-only machine TensorFlow writes ``Could not find cuda drivers``, ``failed call to
cuInit`` and oneDNN notices to file descriptor 2 from C++ before any log level applies, and
tensorflow-datasets logs ``WARNING:absl:...`` lines.  :func:`import_tensorflow` imports
TensorFlow (and runs its device probe) with descriptor 2 pointed at ``/dev/null``, then
restores it; errors raised by the import are still raised.  ``KVAE_VERBOSE_TF=1`` turns this off.
"""
import os
import sys


def import_tensorflow():
    """Import TensorFlow once, without its native start-up messages; returns the module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if "tensorflow" in sys.modules or os.environ.get("KVAE_VERBOSE_TF"):
        import tensorflow as tf

        return tf
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real descriptor 2 (some notebook front-ends)
        import tensorflow as tf

        return tf
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe prints here, once
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    return tf
