"""Dataflow runner profile.

``apply_profile`` adds ``--setup_file=<repo>/setup.py`` unless the user gave one: Beam builds an
sdist of this project at submission (locally, also in a dry run) and every worker installs it, so
workers import ``beam_pipeline``, ``transforms`` and ``runners`` like the launcher does. The Flex
Template image installs the project in editable mode, so /template/setup.py is found there too. From
a non-editable install there is no setup.py beside the packages and nothing is added.

Deliberately not added, because Beam 2.75's DataflowRunner already does it for every job
(``_add_runner_v2_missing_options``, ``_check_and_add_missing_streaming_options``):
``--experiments=use_runner_v2`` (Runner v2 cannot be disabled any more) and, in streaming,
``enable_streaming_engine`` / ``enable_windmill_service``. ``--sdk_location`` keeps Beam's default:
a released SDK uses the SDK inside Dataflow's worker container.

A dry run (``--dry_run=True``) needs a ``--temp_location`` with a valid bucket name; cli.validate
checks it, because otherwise Beam looks up a default bucket over the network.
"""
from __future__ import annotations

from pathlib import Path

from runners.flags import flag_value

SETUP_FILE = Path(__file__).resolve().parent.parent / "setup.py"


def apply_profile(argv: list[str]) -> list[str]:
    """Return argv plus the Dataflow defaults the user did not give (argv is left unchanged)."""
    argv = list(argv)
    if flag_value(argv, "setup_file") is None and SETUP_FILE.is_file():
        argv.append(f"--setup_file={SETUP_FILE}")
    return argv
