"""Programs a test needs: skip, with the reason, before starting anything."""

from __future__ import annotations

import pytest

from ops.local.procs import missing_programs


def require(*names: str) -> None:
    """Skip the calling test or fixture when one of ``names`` is not on PATH.

    Call it first, before any process is started: a fixture that starts a
    redis-server and only then finds redis-sentinel missing must not exist.
    """
    missing = missing_programs(*names)
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
