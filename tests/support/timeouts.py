"""One knob for slow machines: every deadline in the suite goes through `scaled`.

Set ``TEST_TIMEOUT_FACTOR=3`` to give every wait three times longer.
"""

from __future__ import annotations

import os

FACTOR = float(os.environ.get("TEST_TIMEOUT_FACTOR", "1") or "1")


def scaled(seconds: float) -> float:
    """A deadline of `seconds` on a reference machine, stretched by the factor."""
    return seconds * FACTOR
