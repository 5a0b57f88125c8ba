"""Output tags of the multi-output stages, named once (read, decode and sequence share them).

The sequencer's report tags are the names of the state machine's report outcomes
(core/reasons.py Outcome), so the machine's outputs land on their tags without a mapping.
"""
from __future__ import annotations

from beam_pipeline.core.reasons import Outcome

DEAD_LETTER = "dead_letter"        # DeadLetter: a record that could not be used, with its reason
TALLY = "tally"                    # (counter name, n): feeds the summary's conservation check
CLEAN = Outcome.CLEAN.value        # batch: CleanPart; streaming: pyarrow.Table (transforms.sequence)
GAPS = Outcome.GAPS.value          # Gap
CORRUPT_PERIODS = Outcome.CORRUPT_PERIODS.value      # CorruptPeriod
RECOVERY_REQUESTS = Outcome.RECOVERY_REQUESTS.value  # RecoveryRequest
ERRORS = Outcome.ERRORS.value      # ErrorEvent: counted per window and alerted on
ERROR_COUNTS = "error_counts"      # dict rows: errors per window, type and symbol
ALERTS = "alerts"                  # dict rows: alerts raised by the counts
BOOKS = "books"                    # core.books.watch.BookSnapshot: --book_snapshots only
BOOKS_SUFFIX = ".parquet"
STATUS = "status"                  # KeyStatus: where each key stands (batch: at the end;
                                   # streaming: per changed key and flush, and at the end)

# Output folders under --output and their files' suffix (transforms/sinks.py writes them,
# beam_pipeline/readback.py reads them).
FOLDER_SUFFIX = {
    CLEAN: ".parquet",
    DEAD_LETTER: ".avro",
    GAPS: ".parquet",
    CORRUPT_PERIODS: ".parquet",
    RECOVERY_REQUESTS: ".parquet",
    ERROR_COUNTS: ".parquet",
    ALERTS: ".parquet",
    STATUS: ".parquet",
}
# Streaming only: rows that could not be published to --alerts_topic / --recovery_topic.
UNDELIVERED = "undelivered"
UNDELIVERED_SUFFIX = ".parquet"
# Every folder a run may write, with its suffix (readers, compaction).
ALL_FOLDER_SUFFIX = {**FOLDER_SUFFIX, UNDELIVERED: UNDELIVERED_SUFFIX}
INPUT_LAG = "input_lag"            # (publish ms, ingest ms) per Pub/Sub message: backpressure
