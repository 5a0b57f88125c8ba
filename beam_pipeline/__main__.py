"""python -m beam_pipeline: check order-book delta captures (batch) or a live feed (streaming)."""
import logging
import sys
import threading

from beam_pipeline.cli import is_teardown_log, main, teardown_excepthook

code = main(sys.argv[1:])
# What logs after the run (Beam's exit-time clean-up of its job servers warns once per server)
# is not the run's: only errors reach the terminal.
_root = logging.getLogger()
for _handler in list(_root.handlers):     # e.g. a basicConfig() a module-level log call made
    _root.removeHandler(_handler)
_exit_logs = logging.StreamHandler(sys.stderr)
_exit_logs.setLevel(logging.ERROR)
_exit_logs.addFilter(lambda record: not is_teardown_log(record))
_root.addHandler(_exit_logs)
threading.excepthook = teardown_excepthook    # in-process workers may be hung up on at exit
sys.exit(code)
