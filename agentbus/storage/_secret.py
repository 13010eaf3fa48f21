"""A secret value that does not show itself by accident (repr, str, logs, tracebacks)."""

from __future__ import annotations


class SecretValue:
    """Wraps a decrypted secret; ``reveal()`` returns it, everything else prints ``'***'``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretValue('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("SecretValue", self._value))

    def __reduce__(self) -> str:  # never pickled (and so never sent anywhere) by accident
        raise TypeError("SecretValue cannot be pickled; call reveal() deliberately")
