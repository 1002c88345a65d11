"""``python -m kvae.cli ...``: the ``kvae`` command."""
import sys

from kvae.cli.main import main

sys.exit(main())
