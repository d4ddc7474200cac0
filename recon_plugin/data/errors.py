"""The one exception type of the data readers."""

from __future__ import annotations


class RnbDataError(ValueError):
    """The RnB data folder is incomplete or inconsistent; the message names the file."""


class NeroDataError(RnbDataError):
    """The nero-data input (photos and cameras) is incomplete or inconsistent; the message names the file.

    A subclass of the data readers' common error, which the shared normalisation code raises too."""
