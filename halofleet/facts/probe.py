"""
The preflight probe: every fact a deploy or ``halofleet verify`` reads, in one round trip (pyinfra caches no facts).
Each part's command runs in a subshell after a marker line and the part's own parser reads its section, so one odd
part never hides another.
"""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase

from .amdgpu import AmdgpuFaults, AmdgpuState, RunningImage
from .gateway import GatewayState
from .halo import (
    BootConfig,
    ContainerRuntimes,
    GttState,
    HostOs,
    KfdNodes,
    LinuxFirmware,
    LiveCmdline,
    MemTotal,
    RocmInstall,
    cwsr_status,
)
from .halo_files import Backups, ManagedFiles
from .halo_models import ModelFiles
from .halo_rpc import HostAddresses, RpcLog, RpcState
from .halo_serve import (
    Accounts,
    BenchResult,
    ContainerImage,
    LlamaBuild,
    ModelFile,
    ServeHealth,
    ServeState,
    parse_model,
)
from .halo_stack import StackState

PROBE_PARTS: dict[str, type[FactBase]] = {
    "os": HostOs,
    "amdgpu": AmdgpuState,
    "memtotal_kib": MemTotal,
    "live_cmdline": LiveCmdline,
    "boot": BootConfig,
    "kfd_nodes": KfdNodes,
    "rocm": RocmInstall,
    "firmware": LinuxFirmware,
    "gtt": GttState,
    "runtimes": ContainerRuntimes,
    "files": ManagedFiles,
    "accounts": Accounts,
    "serve": ServeState,
    "rpc": RpcState,
    "llama_build": LlamaBuild,
    "addresses": HostAddresses,
    "backups": Backups,
}
# Read by `halofleet verify` only: the deploys never need a completion request.
LIVE_PARTS: dict[str, type[FactBase]] = {
    "health": ServeHealth,
    "bench": BenchResult,
    "faults": AmdgpuFaults,
    "running_image": RunningImage,
    "rpc_log": RpcLog,
    "gateway": GatewayState,
}
# Parts present in the probe's output only when asked for (``image=``, ``live=True``).
OPTIONAL_PARTS: dict[str, type[FactBase]] = {"image": ContainerImage, "model_files": ModelFiles, "stack": StackState,
                                             **LIVE_PARTS}
PROBE_MARK = "@@halofleet-probe "


class HostProbe(FactBase[dict]):
    """
    Every preflight fact in one round trip: each part's command runs in a subshell after a marker line, and
    the part's own parser reads its section.

    .. code:: python

        {"os": {...}, "memtotal_kib": 131072000, "live_cmdline": [...], "boot": {...}, "kfd_nodes": [...],
         "cwsr": {...}, "rocm": {...}, "firmware": "20250410", "gtt": {...}, "runtimes": {...}}

    + model_path: also stat (and with ``hash_model`` hash) the model file the serving stage will use
    + image: also ask podman whether the engine's image is pulled already (key ``image``)
    + model_files: also stat (and, without a matching verified record, hash) these ``halo_models`` files
    + model_dirs: ... and report owner and mode of these directories (key ``model_files``)
    + stack: also read the stack's packages, GRUB entries, carve-out and TTM module (key ``stack``)
    + live: also ask the engine (``ServeHealth``) and read the last bench (``BenchResult``): keys
      ``health`` and ``bench``, for ``halofleet verify``
    """

    # Not mutated: mutmut's wrapper hides this signature from pyinfra's getcallargs (the probe's kwargs fail).
    def command(self, model_path: str | None = None, hash_model: bool = False, image: str | None = None,
                live: bool = False, model_files: list[str] | None = None,
                model_dirs: list[str] | None = None, stack: bool = False) -> str:  # pragma: no mutate block
        commands = {name: fact().command() for name, fact in PROBE_PARTS.items()}
        if stack:
            commands["stack"] = StackState().command()
        if model_path:
            commands["model"] = ModelFile().command(model_path, hash_model)
        if model_files:
            commands["model_files"] = ModelFiles().command(model_files, model_dirs or [])
        if image:
            commands["image"] = ContainerImage().command(image)
        if live:  # `halofleet verify`: the engine's health and the last bench too, still in one round trip
            commands.update({name: fact().command() for name, fact in LIVE_PARTS.items()})
        return "; ".join(
            f"echo '{PROBE_MARK}{name}'; ( {command} ) 2>/dev/null" for name, command in commands.items()
        ) + "; true"

    def process(self, output):
        return parse_probe(list(output))


def parse_probe(lines: list[str]) -> dict[str, Any]:
    sections: dict[str, list[str]] = {name: [] for name in (*PROBE_PARTS, "model")}
    current = None
    for line in lines:
        if line.startswith(PROBE_MARK):
            current = line[len(PROBE_MARK):].strip()
            if current in OPTIONAL_PARTS:
                sections[current] = []
        elif current in sections:
            sections[current].append(line)
    probe: dict[str, Any] = {}
    for name, fact_cls in PROBE_PARTS.items():
        probe[name] = fact_cls().process(sections[name])
    for name, fact_cls in OPTIONAL_PARTS.items():  # only the parts the probe was asked for
        if name in sections:
            probe[name] = fact_cls().process(sections[name])
    probe["model"] = parse_model(sections["model"])
    probe["cwsr"] = cwsr_status(probe["kfd_nodes"])
    return probe
