"""Names that keep concurrent tests (or test runs) apart on one shared server."""

from __future__ import annotations

import os


def unique_namespace(prefix: str = "t") -> str:
    """A bus namespace nobody else uses: tests share a server, never keys."""
    return f"{prefix}{os.urandom(5).hex()}"
