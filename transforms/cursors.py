"""What a streaming job saves when it stops, read by the same job restarted: each key's cursor and,
when it follows files, how far each file was read.

At the end of its input (a stop drains the job to it) the live sequencer writes every key's
machine state, which by then holds nothing (the end closed every wait): last accepted id, segment,
anchoring, times. A restarted job with the same --job_id reads them before it starts
(`take_cursors`, which also removes them: after a crash there is no cursor, and the keys start as
new ones rather than from a cursor that the lost run had moved past) and resumes each key from its
cursor (core/sequencer.resumed), so events that continue it are clean in the same segment and only
a real break is a gap, marked `restart`.

A job following files (--watch_seconds) saves, at the same end, each file's progress
(transforms/follow.py: FileProgress, the offset of the first gzip member or byte not read and the
part of a line read so far); the restarted job (`take_file_progress`, which removes them too: after
a crash the files are read again from their start and readback deduplicates) reads each file on
from there, so each record is read once across the two runs.

    <output>/_state/cursors/<exchange>~<market>~<symbol>.json
    <output>/_state/files/<sha1 of the path>.json      {"path": ..., "progress": FileProgress}
"""
from __future__ import annotations

import hashlib
import urllib.parse

import msgspec
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.core.sequencer import SequencerState

CURSOR_FOLDER = "_state/cursors"
FILE_PROGRESS_FOLDER = "_state/files"
_decode = msgspec.json.Decoder(SequencerState).decode


def cursor_folder(output: str) -> str:
    return f"{output.rstrip('/')}/{CURSOR_FOLDER}"


def file_progress_folder(output: str) -> str:
    return f"{output.rstrip('/')}/{FILE_PROGRESS_FOLDER}"


def _file_name(key) -> str:
    # quote() leaves "~" as it is: escaped by hand, since it separates the parts
    return "~".join(urllib.parse.quote(str(part), safe="").replace("~", "%7E")
                    for part in key) + ".json"


def _key_of(path: str) -> tuple:
    name = path.rsplit("/", 1)[-1][:-len(".json")]
    return tuple(urllib.parse.unquote(part) for part in name.split("~"))


def _replace(folder: str, name: str, data: bytes) -> None:
    """Writes `name` in `folder` whole (a timer that fires again writes the same bytes)."""
    try:
        FileSystems.mkdirs(folder)
    except IOError:
        pass                                   # already there
    with FileSystems.create(f"{folder}/{name}") as handle:
        handle.write(data)


def _take(folder: str) -> list:
    """[(path, bytes)] of the saved files in `folder`, which are removed once read."""
    try:
        matched = FileSystems.match([f"{folder}/*.json"])[0].metadata_list
    except Exception:                          # noqa: BLE001: no folder, nothing saved
        return []
    saved = []
    for metadata in matched:
        with FileSystems.open(metadata.path) as handle:
            saved.append((metadata.path, handle.read()))
    if matched:
        FileSystems.delete([metadata.path for metadata in matched])
    return saved


def save_cursor(folder: str, key, state: SequencerState) -> None:
    """Replaces the key's cursor file."""
    _replace(folder, _file_name(key), msgspec.json.encode(state))


def take_cursors(folder: str) -> dict:
    """{key: SequencerState} of the cursors in `folder`, which are removed once read."""
    return {_key_of(path): _decode(data) for path, data in _take(folder)}


class _SavedProgress(msgspec.Struct):
    path: str
    progress: msgspec.Raw


def save_file_progress(folder: str, path: str, progress: msgspec.Struct) -> None:
    """Replaces the file's saved progress (named by a hash: a path may be longer than a name)."""
    _replace(folder, _progress_name(path), msgspec.json.encode(
        _SavedProgress(path, msgspec.Raw(msgspec.json.encode(progress)))))


def take_file_progress(folder: str, progress_type: type) -> dict:
    """{path: progress_type} saved in `folder`, which are removed once read."""
    decode_saved = msgspec.json.Decoder(_SavedProgress).decode
    decode_progress = msgspec.json.Decoder(progress_type).decode
    taken = {}
    for _, data in _take(folder):
        saved = decode_saved(data)
        taken[saved.path] = decode_progress(saved.progress)
    return taken


def _progress_name(path: str) -> str:
    return hashlib.sha1(path.encode("utf-8")).hexdigest() + ".json"


def keep_file_progress(folder: str, earlier: dict) -> None:
    """After a graceful stop: the progress of a file this run took over (`earlier`) and never
    listed (it stopped first) is saved again as it was, so the next run does not read the file
    from its start."""
    for path, progress in earlier.items():
        if not FileSystems.exists(f"{folder}/{_progress_name(path)}"):
            save_file_progress(folder, path, progress)
