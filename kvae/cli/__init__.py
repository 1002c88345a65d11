"""The ``kvae`` command: :mod:`~kvae.cli.parser` (argparse, no TensorFlow; names from :mod:`kvae.registry`,
model options from :mod:`kvae.options`), :mod:`~kvae.cli.commands` (the command bodies) and
:mod:`~kvae.cli.main` (``main(argv)``, the dispatch)."""
