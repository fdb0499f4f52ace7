"""The one error a store adapter raises when its database cannot be reached or refuses it."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """Opening the store failed: refused connection, bad credentials, unwritable file. The message names
    the cause in one line and never holds a password."""
