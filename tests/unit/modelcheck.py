"""Settings shared by the model-based tests.

``make test`` runs a bounded number of examples so the suite stays quick;
``make fuzz`` sets ``STREAMGATE_FUZZ_EXAMPLES`` to run them long.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def machine_settings(examples: int = 150, steps: int = 60) -> settings:
    scale = int(os.environ.get("STREAMGATE_FUZZ_EXAMPLES", "0"))
    return settings(
        max_examples=scale or examples,
        stateful_step_count=steps * 2 if scale else steps,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
