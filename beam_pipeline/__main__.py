"""`feedcheck` (or python -m beam_pipeline): check order-book delta captures (batch) or a live feed
(streaming); `feedcheck report` and `feedcheck compact` are its subcommands."""

import logging
import sys
import threading

from beam_pipeline import early_signals

if early_signals.is_streaming(sys.argv[1:]):
    early_signals.hold()  # before Beam's imports: a stop signal then is kept, not fatal

from beam_pipeline.cli import is_teardown_log, main, teardown_excepthook  # noqa: E402


def run(argv: list[str] | None = None) -> int:
    """The `feedcheck` console script: run the command line, then exit quietly."""
    code = main(sys.argv[1:] if argv is None else argv)
    # What logs after the run (Beam's exit-time clean-up of its job servers warns once per server)
    # is not the run's: only errors reach the terminal.
    root = logging.getLogger()
    for handler in list(root.handlers):  # e.g. a basicConfig() a module-level log call made
        root.removeHandler(handler)
    exit_logs = logging.StreamHandler(sys.stderr)
    exit_logs.setLevel(logging.ERROR)
    exit_logs.addFilter(lambda record: not is_teardown_log(record))
    root.addHandler(exit_logs)
    threading.excepthook = teardown_excepthook  # in-process workers may be hung up on at exit
    return code


if __name__ == "__main__":
    sys.exit(run())
