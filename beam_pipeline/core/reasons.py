"""Why a record could not be used: the exception every decoder raises, with a stable reason code."""
from __future__ import annotations


class Rejected(Exception):
    """A record that cannot be used: `reason` is a stable code, the message says what was wrong."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message
