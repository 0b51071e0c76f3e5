"""The synthetic event world: the upstream system of the demo, the tests and the benchmarks.

A leaf: it imports ``jobs.core`` only, and only tests, benchmarks and the demo import it (the
pipeline never does: it reads the ground truth through ``jobs.core.catalog``). Its public API:
``WorldParams`` and ``Scenario`` describe a world, ``generate_day`` draws a day's events,
``write_day`` / ``generate`` deliver days to a landing zone (``python -m jobs.sim``).
"""

from jobs.sim.deliver import generate, write_day
from jobs.sim.world import (
    COLUMNS,
    CORRUPTION_KINDS,
    COUNTRIES,
    DEFAULT_STRENGTH,
    DEVICES,
    DRIFT_KINDS,
    EVENT_TYPES,
    Scenario,
    WorldParams,
    WorldState,
    generate_day,
    world_on,
)

__all__ = [
    "COLUMNS",
    "CORRUPTION_KINDS",
    "COUNTRIES",
    "DEFAULT_STRENGTH",
    "DEVICES",
    "DRIFT_KINDS",
    "EVENT_TYPES",
    "Scenario",
    "WorldParams",
    "WorldState",
    "generate",
    "generate_day",
    "world_on",
    "write_day",
]
