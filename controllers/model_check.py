"""What the operator must be able to do with a manifest's model before it plans: resolve its shape, and
trust that the worker can load it.

The API server's schema cannot know either: a `random:` preset the worker lacks, or a model folder the
operator cannot read (it mounts no model volumes), passes admission. Each becomes a problem naming the field
to change, never an exception the operator would retry forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from goodput.crds.inferenceservice import ModelSpec
from goodput.policies.profiles import RANDOM_PREFIX, WORKER_PRESETS, profile_for


@dataclass(frozen=True)
class ModelProblem:
    field: str  # the manifest path to change, e.g. spec.model.source
    reason: str  # CamelCase, for the InvalidSpec condition and the Event
    message: str  # names the field first

    def __str__(self) -> str:
        return self.message


def model_problem(model: ModelSpec) -> ModelProblem | None:
    """Why the operator cannot plan or the worker cannot load `model`; None when both can."""
    if model.source.startswith(RANDOM_PREFIX):
        preset = model.source.removeprefix(RANDOM_PREFIX)
        if preset not in WORKER_PRESETS:
            known = ", ".join(f"{RANDOM_PREFIX}{name}" for name in sorted(WORKER_PRESETS))
            return ModelProblem(
                "spec.model.source",
                "UnknownModelPreset",
                f"spec.model.source: the worker has no preset {preset!r} (it has {known}), "
                "or a model folder, with spec.model.architecture unless the operator can read its config.json",
            )
    if model.architecture is None and not model.source.startswith(RANDOM_PREFIX):
        config = Path(model.source) / "config.json"
        if not config.is_file():
            return ModelProblem(
                "spec.model.architecture",
                "ArchitectureRequired",
                f"spec.model.architecture: required, because the operator cannot read {config} "
                "(it mounts no model volumes): give the model's shape",
            )
    try:
        profile_for(model)
    except KeyError as error:  # a key config.json lacks
        config = Path(model.source) / "config.json"
        return ModelProblem(
            "spec.model.architecture",
            "UnreadableModel",
            f"spec.model.architecture: required, because {config} has no {error.args[0]!r}",
        )
    except (ValueError, TypeError, OSError) as error:  # a bad config.json (JSONDecodeError is a ValueError)
        return ModelProblem("spec.model.source", "UnreadableModel", f"spec.model.source: {error}")
    return None
