"""Output tags of the multi-output stages, named once (read, decode and sequence share them)."""
from __future__ import annotations

DEAD_LETTER = "dead_letter"        # DeadLetter: a record that could not be used, with its reason
TALLY = "tally"                    # (counter name, n): feeds the summary's conservation check
CLEAN = "clean"                    # CleanPart (batch) / Arrow table (streaming): see transforms.sequence
GAPS = "gaps"                      # Gap
CORRUPT_PERIODS = "corrupt_periods"  # CorruptPeriod
RECOVERY_REQUESTS = "recovery_requests"  # RecoveryRequest
ERRORS = "errors"                  # ErrorEvent: counted per window and alerted on
INPUT_LAG = "input_lag"          # (publish ms, ingest ms) per Pub/Sub message: backpressure
