"""The ``kvae`` command: train, evaluate, sample, reconstruct, fit-density, fit-prior, export, explore,
pretrained.

Thin: :mod:`kvae.cli.parser` parses and validates (without TensorFlow), :mod:`kvae.cli.commands`
calls the library.  Errors (bad options included) print one line and exit 1.
"""
import sys

from kvae.cli.commands import COMMANDS
from kvae.cli.parser import UsageError, build_parser

__all__ = ["main", "build_parser", "UsageError", "COMMANDS"]


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
