"""A secret value that does not show itself by accident (repr, str, logs, tracebacks), and the
one rule for what every backend accepts as a secret."""

from __future__ import annotations

from ._errors import ValidationError
from ._models import MAX_TEXT_CHARS


def check_secret(secret: object) -> str:
    """Any non-empty text up to ``MAX_TEXT_CHARS`` that encodes as UTF-8 (the value is sealed,
    never stored as text, so whitespace and NUL are part of the secret). The messages never
    show the value nor its length.

    Raises: ValidationError.
    """
    if not isinstance(secret, str):
        raise ValidationError(f"secret must be text, got {type(secret).__name__}")
    if not secret:
        raise ValidationError("secret must not be empty")
    if len(secret) > MAX_TEXT_CHARS:
        raise ValidationError(f"secret is longer than the limit of {MAX_TEXT_CHARS} characters")
    try:
        secret.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("secret is not valid Unicode text (a lone surrogate)") from None
    return secret


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
