"""Error class of the real-data loaders."""
from __future__ import annotations


class DataError(ValueError):
    """A real-data source cannot be loaded as asked: missing file, unreadable format, frames smaller than the crop, clip too long.

    The message is one line that names the source and says what to do instead.
    """
