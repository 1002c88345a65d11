"""Model names used by the CLI (``kvae train --model NAME``) and :func:`kvae.models.get`."""
MODELS = {}


def register_model(name):
    """Class decorator: make a model available as ``--model name``."""

    def wrap(cls):
        MODELS[name] = cls
        return cls

    return wrap


def get(name):
    """The model class registered under ``name``."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
