"""A run's effective settings, as recorded in summary.json ("settings") and _job.json.

  options   every feedcheck option (options.py: FeedCheckOptions) with its effective value
  runner    the runner, batch or streaming, and every other Beam option the command line set
  versions  feedcheck, Apache Beam, Python, pyarrow, fastavro

Secrets never reach a recorded file: an option whose name says it holds one (password, token,
credential, secret, private key, ...) is replaced by REDACTED, and in every text the password of
a URL (scheme://user:password@host) and secret-looking query parameters (token=, key=, sig=, ...)
are too.
"""
from __future__ import annotations

import argparse
import platform
import re
from importlib import metadata

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_pipeline.options import FeedCheckOptions

REDACTED = "<redacted>"
SECRET_NAME = re.compile(r"pass(word|wd)?|secret|token|credential|private_key|api_?key|"
                         r"auth|sas|signature", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*):(?P<secret>[^/@\s]+)@")
_QUERY_SECRET = re.compile(r"(?P<head>[?&;](?:[A-Za-z0-9_.-]*(?:token|key|secret|password|passwd|"
                           r"sig|signature|credential|auth)[A-Za-z0-9_.-]*)=)(?P<secret>[^&;#\s]+)",
                           re.IGNORECASE)


def feedcheck_option_names() -> list[str]:
    """The dests of every option FeedCheckOptions declares, in declaration order."""
    parser = argparse.ArgumentParser(add_help=False)
    FeedCheckOptions._add_argparse_args(parser)
    return [action.dest for action in parser._actions if action.option_strings]


def redact_text(text: str) -> str:
    """`text` with URL passwords and secret query parameters replaced by REDACTED."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['head']}{REDACTED}", text)


def redact(name: str, value):
    """An option's value as it may be recorded."""
    if value is None or isinstance(value, bool):
        return value
    if SECRET_NAME.search(name):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, (list, tuple)):
        return [redact(name, item) for item in value]
    if isinstance(value, dict):
        return {key: redact(f"{name}.{key}", item) for key, item in value.items()}
    if isinstance(value, (int, float)):
        return value
    return redact_text(str(value))


def _version(package: str):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    return {"feedcheck": _version("feedcheck") or "0.1.0 (source tree)",
            "apache_beam": _version("apache-beam"), "python": platform.python_version(),
            "pyarrow": _version("pyarrow"), "fastavro": _version("fastavro")}


def effective_settings(options: PipelineOptions) -> dict:
    """The run's settings record (module docstring), secrets redacted."""
    ours = options.view_as(FeedCheckOptions)
    names = feedcheck_option_names()
    recorded = {name: redact(name, getattr(ours, name)) for name in names}
    standard = options.view_as(StandardOptions)
    beam_set = {name: redact(name, value)
                for name, value in sorted(options.get_all_options(drop_default=True).items())
                if name not in recorded and name not in ("runner", "streaming")}
    return {"options": recorded,
            "runner": {"name": standard.runner or "DirectRunner",
                       "mode": "streaming" if standard.streaming else "batch",
                       "options": beam_set},
            "versions": versions()}
