"""Errors of the test harness."""

from __future__ import annotations


class ServerUnavailableError(RuntimeError):
    """A server binary (or pgvector >= 0.8) is missing, or the server did not start.

    The message names what is missing and the script that installs it.
    """
