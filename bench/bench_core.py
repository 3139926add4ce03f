"""CPU benchmark of lossdiag for developers: ``lossdiag bench`` plus every timing and the
performance targets (PASS/MISS, ``--strict`` fails on a missed one); see bench/README.md."""
import sys

from lossdiag.benchmark import main

if __name__ == "__main__":
    sys.exit(main(developer=True))
