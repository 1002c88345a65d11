"""The ``kvae`` command: train, evaluate, sample, reconstruct, fit-density, fit-prior, export, explore,
pretrained.

Thin: :mod:`kvae.cli.parser` parses and validates (without TensorFlow), :mod:`kvae.cli.commands`
calls the library.  Errors (bad options included) print one line and exit 1.
"""
import os
import sys

from kvae.cli.commands import COMMANDS
from kvae.cli.parser import UsageError, build_parser

__all__ = ["main", "build_parser", "UsageError", "COMMANDS"]


#: the static binarised MNIST file (kvae.data.datasets.MNIST_FILE; not imported: kvae.data loads TensorFlow)
MNIST_FILE = "binarized_mnist.npz"


def data_location_problem(args):
    """What is wrong with ``--data-dir`` (not a directory; no ``binarized_mnist.npz`` in it for
    ``--dataset binarized_mnist``), checked without TensorFlow; None when nothing is."""
    data_dir = getattr(args, "data_dir", None)
    if not data_dir:
        return None
    if not os.path.isdir(data_dir):
        return f"--data-dir {data_dir} is not a directory"
    if getattr(args, "dataset", None) == "binarized_mnist" and not os.path.isfile(os.path.join(data_dir, MNIST_FILE)):
        return (f"binarized_mnist not found: no {MNIST_FILE} in {data_dir} (--data-dir; a named directory is never "
                "downloaded into). Provide the file (arrays train, valid[, test], uint8 N x 784) there")
    return None


def main(argv=None):
    """Run the ``kvae`` command; returns the exit status (0, or 1 after a one-line error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and not argv[0].startswith("-") else None
    prog = f"kvae {command}" if command else "kvae"
    try:
        args = build_parser(argv).parse_args(argv)
    except UsageError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except SystemExit as exit_:  # --help
        return exit_.code or 0
    problem = data_location_problem(args)
    if problem:  # before TensorFlow loads: a missing file is named at once
        print(f"{prog}: error: {problem}", file=sys.stderr)
        return 1
    from kvae._quiet import import_tensorflow

    import_tensorflow()
    from kvae.errors import KvaeError

    try:
        COMMANDS[args.command](args)
    except (KvaeError, UsageError, ValueError, OSError) as err:
        text = " ".join(str(err).split()) or type(err).__name__
        print(f"kvae {args.command}: error: {text}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
