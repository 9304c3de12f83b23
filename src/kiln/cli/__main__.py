"""`python -m kiln.cli`: the same as the `kiln` command."""

import sys

from kiln.cli import main

if __name__ == "__main__":
    sys.exit(main())
