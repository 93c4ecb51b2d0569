"""Entry point of the frozen binary: the same dispatcher as `python -m tincapp`."""
import sys

from tincapp.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
