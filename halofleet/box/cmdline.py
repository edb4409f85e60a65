"""
Kernel command line handling: parse, key, merge. Pure functions.

Stages contribute parameters to one :class:`KernelParams` (NixOS-style merging); one operation writes the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..contract import policy


def parse(cmdline: str) -> list[str]:
    """Split a cmdline into parameters as the kernel does: on whitespace outside double quotes."""
    params, current, quoted = [], [], False
    for char in cmdline:
        if char == '"':
            quoted = not quoted
        if char.isspace() and not quoted:
            if current:
                params.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        params.append("".join(current))
    return params


def key(param: str) -> str:
    """The name a parameter sets. The kernel treats ``-`` and ``_`` in names alike."""
    return param.split("=", 1)[0].replace("-", "_")


def merge(existing: list[str], ours: list[str], managed_keys: tuple[str, ...] = policy.MANAGED_PARAM_KEYS) -> list[str]:
    """The user's parameters with every managed key dropped, then ours: ours replace, never duplicate."""
    dropped = {key(k) for k in managed_keys} | {key(p) for p in ours}
    kept = [param for param in existing if key(param) not in dropped]
    return kept + list(ours)


def managed_subset(params: list[str], managed_keys: tuple[str, ...] = policy.MANAGED_PARAM_KEYS) -> list[str]:
    """The managed parameters present in ``params``, in order."""
    wanted = {key(k) for k in managed_keys}
    return [param for param in params if key(param) in wanted]


def satisfies(live: list[str], ours: list[str], managed_keys: tuple[str, ...] = policy.MANAGED_PARAM_KEYS) -> bool:
    """True when the live managed parameters are exactly ours (the last occurrence of a key wins in the kernel)."""
    live_values: dict[str, str] = {}
    for param in managed_subset(live, managed_keys):
        live_values[key(param)] = param
    wanted = {key(param): param for param in ours}
    return live_values == wanted


class ParamConflict(ValueError):
    pass


@dataclass
class KernelParams:
    """Parameters contributed by several stages; a key set twice to different values is a conflict."""

    params: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (param, contributing stage)

    def add(self, param: str, stage: str) -> None:
        name = key(param)
        if name not in {key(k) for k in policy.MANAGED_PARAM_KEYS}:
            # Misspelled names are silently ignored by the kernel [C: ROCm/ROCm#5595]: never emit one.
            raise ParamConflict(f"{stage}: {name!r} is not a kernel parameter halofleet knows")
        if name in self.params and self.params[name][0] != param:
            other, other_stage = self.params[name]
            raise ParamConflict(f"{stage} sets {param!r} but {other_stage} already set {other!r}")
        self.params[name] = (param, stage)

    def as_list(self) -> list[str]:
        return [param for param, _stage in self.params.values()]
