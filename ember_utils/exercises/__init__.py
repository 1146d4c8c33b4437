"""Check functions for the chapters' exercises: the reader implements a piece of the method, the check runs it on
the chapter's real data next to the package's implementation and says what is wrong (raising
:class:`ExerciseFailed`) or confirms it. One module per chapter topic."""
from ._check import ExerciseFailed

__all__ = ["ExerciseFailed"]
