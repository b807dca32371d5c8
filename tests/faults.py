"""Fault injection for resume tests: make a method fail on its n-th call, as a killed process would stop there."""

from __future__ import annotations

from typing import Any

import pytest


def fail_on_call(monkeypatch: pytest.MonkeyPatch, owner: type, name: str, call: int) -> None:
    """Patch ``owner.name`` so that its ``call``-th call (1-based) raises ``RuntimeError("killed")``."""
    real = getattr(owner, name)
    calls = [0]

    def dying(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            raise RuntimeError("killed")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, dying)
