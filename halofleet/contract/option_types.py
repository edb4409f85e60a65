"""
The types of the host-data contract: :class:`Option`, one entry of the table in :mod:`.options` (type, default,
doc, choices, bounds, extra grammar), and :func:`coerce_type`, which reads a value as its option's type or refuses
it with a one-line reason. One place for both, so the table's declaration is also its validation.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from . import validators


@dataclass(frozen=True)
class Option:
    type: str  # "choice" | "bool" | "int" | "float" | "str" | "version" | "list" | "args" | "url" | "secret" |
    # "names" (a list of words) | "map" (words to words) | "hosts" (inventory host names, maybe none) |
    # "numbers" | "stack" (a profile name or a mapping: contract.stacks)
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    minimum: int | float | None = None
    maximum: int | float | None = None
    nullable: bool = False
    check: Callable[[Any], str | None] | None = None  # extra rule: returns the "allowed" text when it fails
    hide_value: bool = False  # refusals do not repeat the value (it may carry a secret)



IOMMU_REJECTED_SPELLINGS = {"amd_iommu=pt": "amd_iommu=pt is not a valid kernel option (AMD-Vi: Unknown option - 'pt')"}


def coerce_type(key: str, option: Option, value: Any, fail: Callable[[str], Exception]) -> Any:
    """The value as the option's type, or a ConfigError: never another exception (one host's bad data must not
    abort the fleet)."""
    kind = option.type
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in validators.TRUE_WORDS | validators.FALSE_WORDS:
            return value.lower() in validators.TRUE_WORDS
        raise fail("must be true or false")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise fail("must be a whole number")
        if isinstance(value, str):
            if not validators.check_int_text(value):
                raise fail("must be a whole number")
            value = int(value)
        too_small = option.minimum is not None and value < option.minimum
        if too_small or option.maximum is not None and value > option.maximum:
            raise fail(f"must be between {option.minimum} and {option.maximum}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise fail("must be a number")
        try:
            value = float(value)
        except (ValueError, OverflowError):
            raise fail("must be a number") from None
        if not option.minimum <= value <= option.maximum:  # also refuses nan
            raise fail(f"must be between {option.minimum} and {option.maximum}")
        return value
    if kind == "list":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(item, str) and item and not any(c.isspace() for c in item) for item in value
        ):
            raise fail("must be a non-empty list of package names")
        return list(value)
    if kind == "models":  # the entries are checked by halofleet.models.specs.parse_models
        if not isinstance(value, (list, tuple)):
            raise fail("must be a list of model entries (mappings)")
        return list(value)
    if kind == "names":
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(item, str) for item in value):
            raise fail("must be a non-empty list of names")
        return list(value)
    if kind == "map":
        if not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise fail("must be a non-empty mapping of names to names")
        return dict(value)
    if kind == "stack":  # a profile name or a site's own profile (checked by contract.stacks.check_stack)
        if isinstance(value, dict):
            return dict(value)
        if not isinstance(value, str):
            raise fail("must be a profile name or a mapping (a site's own profile)")
        return value
    if kind == "hosts":
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) and item for item in value):
            raise fail("must be a list of inventory host names")
        return list(value)
    if kind == "numbers":
        if not isinstance(value, (list, tuple)) or validators.check_tensor_split(list(value)):
            raise fail(validators.TENSOR_SPLIT_ALLOWED)
        return [float(item) for item in value]
    if kind == "args":
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) and item for item in value):
            raise fail("must be a list of arguments, one word each, without spaces, quotes, '%', '$', ';' or '\\'")
        return list(value)
    if not isinstance(value, str):
        raise fail(f"must be a string, not {type(value).__name__}")
    if any(c in value for c in "\n\r\0"):
        raise fail("must be a single line")
    if kind == "choice":
        if key == "halo_iommu" and value in IOMMU_REJECTED_SPELLINGS:
            raise fail(IOMMU_REJECTED_SPELLINGS[value] + "; use 'off' (amd_iommu=off) or 'pt' (iommu=pt)")
        if value not in option.choices:
            hint = difflib.get_close_matches(value, option.choices, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise fail("must be one of " + ", ".join(option.choices) + extra)
    if kind == "url" and not value.startswith(("http://", "https://", "file:/")):
        raise fail("must be an http://, https:// or file:/ URL")
    return value
