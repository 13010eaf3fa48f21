"""``Fence``: the fencing token a storage write carries, and whose tokens it is compared with.

The newest token seen is kept per (scope, name), and the scope follows where the lock's tokens
come from. A lock scoped to one agent (``bus.lock(name, ...)``) counts its own tokens, so its
fence is kept per acting agent: one agent's token never makes another agent's write stale. A
family-wide lock or heartbeat (``family=True``) draws its tokens from one counter for the whole
family, so its fence is kept once for the family: a holder that lost the lock is refused whichever
agent wrote with the newer token. ``lease.fence`` and ``run.fence`` carry the right scope.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._canonical import check_text
from ._errors import ValidationError
from ._models import MAX_NAME_CHARS

MAX_FENCING_TOKEN = 2**63 - 1
"""The largest fencing token (a signed 64-bit integer on every backend)."""


@dataclass(frozen=True, slots=True)
class Fence:
    """A fencing token for a storage write: ``update_task(..., fence=lease.fence)``.

    Args:
        name: the lock's (or heartbeat's) name, at most 500 characters.
        token: its fencing token, an integer from 0 to 2**63 - 1.
        family: True for a family-wide lock or heartbeat: the token is compared with the newest
            one any agent wrote with for ``name``; False (the default) compares it with the
            newest one the acting agent wrote with — the same as ``fence=(name, token)``.

    Raises:
        ValidationError: a name, token or ``family`` outside those rules.
    """

    name: str
    token: int
    family: bool = False

    def __post_init__(self) -> None:
        check_text("fence name", self.name, max_chars=MAX_NAME_CHARS)
        token = self.token
        is_int = isinstance(token, int) and not isinstance(token, bool)
        if not is_int or not 0 <= token <= MAX_FENCING_TOKEN:
            raise ValidationError(
                f"fencing token must be an integer from 0 to {MAX_FENCING_TOKEN}, got {token!r}"
            )
        if not isinstance(self.family, bool):
            raise ValidationError(f"fence family must be True or False, got {self.family!r}")
