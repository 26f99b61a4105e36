"""``python -m asymseg``: the command-line interface."""

import sys

from asymseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
