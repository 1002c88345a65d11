"""The ``kvae`` command: a parser that needs no TensorFlow, and the command bodies."""
