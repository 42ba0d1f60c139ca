"""``python -m ropetheory``: the same command line as ``ropetheory``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
