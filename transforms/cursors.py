"""Each key's cursor, saved when a streaming job stops and read by the same job restarted.

At the end of its input (a stop drains the job to it) the live sequencer writes every key's
machine state, which by then holds nothing (the end closed every wait): last accepted id, segment,
anchoring, times. A restarted job with the same --job_id reads them before it starts
(`take_cursors`, which also removes them: after a crash there is no cursor, and the keys start as
new ones rather than from a cursor that the lost run had moved past) and resumes each key from its
cursor (core/sequencer.resumed), so events that continue it are clean in the same segment and only
a real break is a gap, marked `restart`.

    <output>/_state/cursors/<exchange>~<market>~<symbol>.json
"""
from __future__ import annotations

import urllib.parse

import msgspec
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.core.sequencer import SequencerState

CURSOR_FOLDER = "_state/cursors"
_decode = msgspec.json.Decoder(SequencerState).decode


def cursor_folder(output: str) -> str:
    return f"{output.rstrip('/')}/{CURSOR_FOLDER}"


def _file_name(key) -> str:
    # quote() leaves "~" as it is: escaped by hand, since it separates the parts
    return "~".join(urllib.parse.quote(str(part), safe="").replace("~", "%7E")
                    for part in key) + ".json"


def _key_of(path: str) -> tuple:
    name = path.rsplit("/", 1)[-1][:-len(".json")]
    return tuple(urllib.parse.unquote(part) for part in name.split("~"))


def save_cursor(folder: str, key, state: SequencerState) -> None:
    """Replaces the key's cursor file (a timer that fires again writes the same bytes)."""
    try:
        FileSystems.mkdirs(folder)
    except IOError:
        pass                                   # already there
    with FileSystems.create(f"{folder}/{_file_name(key)}") as handle:
        handle.write(msgspec.json.encode(state))


def take_cursors(folder: str) -> dict:
    """{key: SequencerState} of the cursors in `folder`, which are removed once read."""
    matched = FileSystems.match([f"{folder}/*.json"])[0].metadata_list
    cursors = {}
    for metadata in matched:
        with FileSystems.open(metadata.path) as handle:
            cursors[_key_of(metadata.path)] = _decode(handle.read())
    if matched:
        FileSystems.delete([metadata.path for metadata in matched])
    return cursors
