"""MedQ: active-learning data engine for medical image quality assessment.

The public surface, importable as ``medq.<name>`` (loaded on first use, so ``import medq`` stays
cheap and pulls in neither Prefect nor torch)::

    import medq

    settings = medq.load_settings(workspace="my-ws")       # the typed settings tree (MEDQ_*)
    ws = medq.open_workspace("my-ws")                      # catalog, objects, settings
    medq.run_loop(workspace="my-ws", rounds=2)             # closed-loop rounds (a Prefect flow)
    result = medq.evaluate_model("my-ws", model)           # MedQ-Bench evaluation, stored

    # the engine on your own arrays and records (pure, no workspace needed)
    found = medq.discover_prototypes("r001", failures, embeddings, min_cluster_size=5)
    shares = medq.allocate_budget(found.prototypes, 100)   # retrieval budget per prototype
    anchors = medq.plan_anchors(found.prototypes, embeddings, budgets=shares)
    routed = medq.route_candidates(ids, entropies, settings.lanes, budget=60.0)
    letter = medq.extract_answer("The answer is (B).")     # VLMEvalKit-style MCQ extraction

Shapes, units and score directions are in each function's docstring.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> "module:attribute"
_API = {
    # settings and workspaces
    "Settings": "medq.settings:Settings",
    "load_settings": "medq.settings:load_settings",
    "Workspace": "medq.storage.workspace:Workspace",
    "open_workspace": "medq.tasks._runtime:open_workspace",
    "MedQError": "medq.errors:MedQError",
    # the loop and evaluation
    "run_loop": "medq.flows.engine_loop:engine_loop",
    "evaluate_model": "medq.tasks.evaluate:evaluate_model",
    "create_model": "medq.engine.models:create_model",
    # discovery: failures -> prototypes
    "Failure": "medq.engine.discover:Failure",
    "Prototype": "medq.engine.discover:Prototype",
    "DiscoveryResult": "medq.engine.discover:DiscoveryResult",
    "discover_prototypes": "medq.engine.discover:discover_prototypes",
    # retrieval planning
    "allocate_budget": "medq.engine.explore:allocate_budget",
    "plan_anchors": "medq.engine.explore:plan_anchors",
    "select_candidates": "medq.engine.explore:select_candidates",
    # routing into lanes
    "route_candidates": "medq.engine.route:route_candidates",
    "RoutingResult": "medq.engine.route:RoutingResult",
    "normalized_entropy": "medq.engine.route:normalized_entropy",
    # MedQ-Bench scoring
    "extract_answer": "medq.engine.scoring.mcq:extract_answer",
    "MCQResult": "medq.engine.scoring.mcq:MCQResult",
    "accuracy_report": "medq.engine.scoring.mcq:accuracy_report",
}

__all__ = [  # literal, so linters and IDEs read it; tests/test_public_api.py keeps it = _API
    "__version__",
    "Settings", "load_settings", "Workspace", "open_workspace", "MedQError", "run_loop",
    "evaluate_model", "create_model", "Failure", "Prototype", "DiscoveryResult",
    "discover_prototypes", "allocate_budget", "plan_anchors", "select_candidates",
    "route_candidates", "RoutingResult", "normalized_entropy", "extract_answer", "MCQResult",
    "accuracy_report",
]

if TYPE_CHECKING:  # static tools and IDEs see the real objects
    from medq.engine.discover import DiscoveryResult, Failure, Prototype, discover_prototypes
    from medq.engine.explore import allocate_budget, plan_anchors, select_candidates
    from medq.engine.models import create_model
    from medq.engine.route import RoutingResult, normalized_entropy, route_candidates
    from medq.engine.scoring.mcq import MCQResult, accuracy_report, extract_answer
    from medq.errors import MedQError
    from medq.flows.engine_loop import engine_loop as run_loop
    from medq.settings import Settings, load_settings
    from medq.storage.workspace import Workspace
    from medq.tasks._runtime import open_workspace
    from medq.tasks.evaluate import evaluate_model


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'medq' has no attribute {name!r}; public names: "
                             f"{', '.join(sorted(_API))}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
