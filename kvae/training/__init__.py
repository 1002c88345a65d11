"""Training: runs (what ``kvae train`` does), checkpoints that resume exactly, callbacks."""


def __getattr__(name):  # submodules as attributes (kvae.training.<module>), imported on first use
    from kvae._lazy import submodule

    return submodule(__name__, name)
