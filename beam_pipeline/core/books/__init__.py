"""Order books rebuilt per key, their sanity checks and the venues' checksums (free of Beam)."""
from beam_pipeline.core.books.book import Book
from beam_pipeline.core.books.checker import PROFILES, Profile, check, profile_of
from beam_pipeline.core.books.tracker import BookCounts, BookProblem, KeyBook

__all__ = ["Book", "BookCounts", "BookProblem", "KeyBook", "PROFILES", "Profile", "check",
           "profile_of"]
