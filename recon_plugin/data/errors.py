"""The one exception type of the data readers."""

from __future__ import annotations


class RnbDataError(ValueError):
    """The RnB data folder is incomplete or inconsistent; the message names the file."""
