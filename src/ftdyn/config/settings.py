"""Schema fields that say what kind of setting they are, and the walks over a typed config that
read it: `setting()` marks a field as launch (outside the run key) and gives its bounds;
`leaves`, `is_launch` and `bound_problems` read those marks; `json_safe` makes values plain."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import field
from typing import Any

from omegaconf import MISSING


def setting(default: Any = MISSING, *, launch: bool = False, ge: float | None = None, gt: float | None = None,
            lt: float | None = None) -> Any:
    """A schema field with its kind and bounds.

    Args:
        default: The default (lists and dicts are copied per instance); MISSING: an option file must set it.
        launch: True for how a job is launched or logged, never what it computes (outside the run key).
        ge, gt, lt: Bounds a number must keep (>=, >, <), checked with the key's name.
    """
    metadata = {"launch": launch, "ge": ge, "gt": gt, "lt": lt}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def leaves(obj, prefix: str = ""):
    """(dotted key, dataclass field, value) of every leaf setting under a typed config, in order.

    A leaf is a field that is not itself a schema dataclass (lists and mappings are leaves).
    """
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, value


def is_launch(obj, key: str) -> bool:
    """Whether the setting `key` (dotted) of a typed config, or a group above it, is marked launch."""
    node = obj
    for part in key.split("."):
        f = next(f for f in dataclasses.fields(node) if f.name == part)
        if f.metadata.get("launch"):
            return True
        node = getattr(node, part)
    return False


def bound_problems(run) -> list[str]:
    """Every numeric setting outside its declared bounds (`setting(ge=, gt=, lt=)`), by key."""
    out = []
    for key, f, value in leaves(run):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        ge, gt, lt = (f.metadata.get(b) for b in ("ge", "gt", "lt"))
        if (ge is not None and value < ge) or (gt is not None and value <= gt) or (lt is not None and value >= lt):
            out.append(f"{key}={value}: {_allowed(ge, gt, lt)}")
    return out


def _allowed(ge: float | None, gt: float | None, lt: float | None) -> str:
    """A bound in words: `allowed [0, 1)`, `must be >= 1`, `must be > 0`."""
    low = f"[{ge:g}" if ge is not None else f"({gt:g}" if gt is not None else None
    if low and lt is not None:
        return f"allowed {low}, {lt:g})"
    return "must be " + (f">= {ge:g}" if ge is not None else f"> {gt:g}" if gt is not None else f"< {lt:g}")


def json_safe(value):
    """Enums as their string values, recursively (StrEnum members already are strs; this makes
    them plain, so YAML and JSON writers and `repr` show `sft`, not `<Method.sft: 'sft'>`)."""
    if dataclasses.is_dataclass(value):
        return json_safe(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value.value if isinstance(value, enum.Enum) else value
