"""Each public package re-exports its surface in a complete, sorted __all__."""

from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = [
    "agentbus",
    "agentbus.presence",
    "agentbus.storage",
    "agentbus.streams",
    "agentbus.testing",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_complete_and_sorted(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", "").startswith(name)
    }
    assert set(module.__all__) >= public
    assert list(module.__all__) == sorted(module.__all__)
    for attr in module.__all__:
        assert hasattr(module, attr)
