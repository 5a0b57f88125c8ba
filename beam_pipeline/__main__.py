"""python -m beam_pipeline: check order-book delta captures (batch) or a live feed (streaming)."""
import sys

from beam_pipeline.cli import main

sys.exit(main(sys.argv[1:]))
