"""Dataflow runner profile: Dataflow's workers get this project's package.

``apply_profile`` gives Beam the package, unless the user gave ``--setup_file``:

- run from a checkout, or from an editable install (``make setup``, the Flex Template image): the
  packages sit beside ``pyproject.toml``, so it adds ``--setup_file=<root>/pyproject.toml``; Beam
  builds an sdist of it at submission (``python -m build --sdist``, locally, also in a dry run) and
  every worker installs it;
- installed with pip (``pip install feedcheck``, the packages in site-packages): there is no
  ``pyproject.toml`` beside them, so the installed distribution is packed back into a wheel (its
  files as pip recorded them, pure Python) and added as ``--extra_package=<wheel>``, which Beam
  stages and every worker installs (Beam: "Multiple File Dependencies", "Non-Python
  Dependencies or PyPI Dependencies with Non-Python Dependencies").

Either way the workers import the same ``beam_pipeline``, ``transforms`` and ``runners`` packages,
with the same package data, as the launcher.

Deliberately not added, because Beam 2.75's DataflowRunner already does it for every job
(``_add_runner_v2_missing_options``, ``_check_and_add_missing_streaming_options``):
``--experiments=use_runner_v2`` (Runner v2 cannot be disabled any more) and, in streaming,
``enable_streaming_engine`` / ``enable_windmill_service``. ``--sdk_location`` keeps Beam's default:
a released SDK uses the SDK inside Dataflow's worker container.

A dry run (``--dry_run=True``) needs a ``--temp_location`` with a valid bucket name; cli.validate
checks it, because otherwise Beam looks up a default bucket over the network.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from runners.flags import flag_value

ROOT = Path(__file__).resolve().parent.parent
SETUP_FILE = ROOT / "pyproject.toml"
DISTRIBUTION = "feedcheck"
# What an installed distribution holds that is not the wheel's: pip's records of the install, the
# console-script launchers it wrote outside site-packages, and byte code.
_NOT_IN_WHEEL = ("INSTALLER", "REQUESTED", "direct_url.json", "RECORD")


def apply_profile(argv: list[str]) -> list[str]:
    """Return argv plus the Dataflow defaults the user did not give (argv is left unchanged)."""
    argv = list(argv)
    if flag_value(argv, "setup_file") is not None:
        return argv
    if SETUP_FILE.is_file():
        argv.append(f"--setup_file={SETUP_FILE}")
    else:
        argv.append(f"--extra_package={installed_wheel()}")
    return argv


_wheels: dict[str, str] = {}


def installed_wheel(distribution: str = DISTRIBUTION) -> str:
    """A wheel of the installed ``distribution``, built from its files in site-packages (once per
    process, in a temporary folder removed at exit)."""
    if distribution not in _wheels:
        folder = tempfile.mkdtemp(prefix="feedcheck-package-")
        atexit.register(shutil.rmtree, folder, True)
        _wheels[distribution] = str(pack_installed(distribution, Path(folder)))
    return _wheels[distribution]


def pack_installed(distribution: str, folder: Path) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` of an installed pure-Python distribution into
    ``folder``: every file pip recorded under site-packages (no byte code, no launchers, no
    install records), and a new RECORD with each file's hash, as the wheel format wants."""
    dist = metadata.distribution(distribution)
    name = dist.metadata["Name"].replace("-", "_")
    version = dist.version
    info = f"{name}-{version}.dist-info"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(dist.files or [], key=str):
            path = str(file)
            if (
                path.startswith("..")
                or "__pycache__" in file.parts
                or path.endswith(".pyc")
                or (file.parts[0] == info and file.name in _NOT_IN_WHEEL)
            ):
                continue
            data = file.locate().read_bytes()
            archive.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{path},sha256={digest.decode()},{len(data)}")
        records.append(f"{info}/RECORD,,")
        archive.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    return wheel
