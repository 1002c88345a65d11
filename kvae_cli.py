"""Entry point of the ``kvae`` command: imports kvae lazily so that ``kvae --help`` is instant."""
import os
import sys


def main(argv=None):
    os.environ.setdefault("KVAE_LAZY_IMPORT", "1")
    from kvae.cli.main import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
