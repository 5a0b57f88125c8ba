"""Flex Template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE in templates/Dockerfile).

Dataflow's launcher runs this file with the template parameters as ``--name=value`` plus its own
options (project, region, staging and temp locations, ``--template_location``); cli.main builds the
graph and writes the job there, and Dataflow starts it. Two additions make the one template serve
batch and streaming (see templates/README.md):

- A parameter is always ``--name=value``, but Beam's ``--streaming`` is a bare flag that rejects a
  value, so a job given ``input_subscription`` is made a streaming job here.
- The runner defaults to DataflowRunner: this file only ever runs inside the launcher.
"""
import sys

from beam_pipeline.cli import main
from runners.flags import flag_value


def template_argv(argv: list[str]) -> list[str]:
    argv = list(argv)
    if flag_value(argv, "runner") is None:
        argv.append("--runner=DataflowRunner")
    if flag_value(argv, "input_subscription") and flag_value(argv, "streaming") is None:
        argv.append("--streaming")
    return argv


if __name__ == "__main__":
    sys.exit(main(template_argv(sys.argv[1:])))
