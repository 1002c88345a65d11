"""Name -> part lookups shared by posteriors, priors and likelihoods (``posterior="iaf"`` etc.)."""
import keras


class PartRegistry:
    """Builds a part from a name, passes a layer through, or deserialises a config dict."""

    def __init__(self, kind, parts):
        self.kind, self.parts = kind, dict(parts)

    def get(self, identifier, argument):
        if isinstance(identifier, keras.layers.Layer):
            return identifier
        if isinstance(identifier, dict):
            return keras.saving.deserialize_keras_object(identifier)
        try:
            factory = self.parts[identifier]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {identifier!r}; choose one of {sorted(self.parts)} "
                             "or pass a layer") from None
        return factory(argument, name=self.kind if self.kind != "decoder likelihood" else "likelihood")

    def register(self, name, cls):
        self.parts[name] = cls
