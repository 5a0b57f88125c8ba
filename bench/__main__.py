"""python -m bench: generate a synthetic capture once, then measure the plain-Python baseline, the
full pipeline on DirectRunner and on embedded Flink on it (see bench/harness.py, bench/README.md)."""
import sys

from bench.harness import main

sys.exit(main())
