"""Degradation simulators: deterministic by seed, physics-motivated where the physics is known.

Public API::

    SIMULATORS: dict[str, Simulator]           # every simulated type (taxonomy identifiers)
    apply(image, type, level, rng) -> (degraded, params)
    degrade(image, [{"type", "level"}], seed) -> (degraded, provenance)

Images are float32 in [0, 1], (H, W) or (H, W, 3); levels 0 = none, 1 = mild, 2 = severe. Each
simulator is documented in its module: :mod:`.ct` (projection domain), :mod:`.mri` (k-space),
:mod:`.general`, :mod:`.xray`, :mod:`.histo`, :mod:`.optical`, :mod:`.ultrasound`.
"""
from medq.engine.degrade._util import DegradationError
from medq.engine.degrade.registry import (
                                          SIMULATORS,
                                          STAGES,
                                          Simulator,
                                          apply,
                                          degrade,
                                          ordered,
                                          simulator,
                                          step_rng,
)

__all__ = [
                                          "SIMULATORS",
                                          "STAGES",
                                          "DegradationError",
                                          "Simulator",
                                          "apply",
                                          "degrade",
                                          "ordered",
                                          "simulator",
                                          "step_rng",
]
