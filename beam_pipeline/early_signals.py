"""A streaming job's SIGINT/SIGTERM that arrives before the job can stop gracefully.

Importing Beam and building the graph take seconds. A stop signal in that time (a deploy that
starts and at once replaces a job, `systemctl restart` twice) would kill the process with its
default action. Instead it is kept here and acted on as soon as the job runs (cli.StreamingStop).
This module imports nothing heavy, so `feedcheck` installs the hold before it imports Beam."""
from __future__ import annotations

import signal

received: list[int] = []


def hold() -> None:
    """Keep SIGINT and SIGTERM until a streaming job's stop handler takes them."""
    def keep(signum, _frame):
        received.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, keep)


def is_streaming(argv: list[str]) -> bool:
    return any(arg == "--streaming" or arg.startswith("--streaming=") and
               arg.split("=", 1)[1].lower() not in ("false", "0")
               for arg in argv)
