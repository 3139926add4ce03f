"""CPU benchmark of lossdiag (same as ``lossdiag bench``); see bench/README.md for the options."""
import sys

from lossdiag._bench import main

if __name__ == "__main__":
    sys.exit(main())
