"""
From one host's data and its preflight probe to everything the stages will write: a pure function, so the whole
decision (and every refusal) is tested without a host and made before the first change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..contract import policy, stacks
from ..contract.config import ConfigError, HaloConfig, HostRefused
from ..fleet import rpc
from ..models.specs import validate
from . import cmdline, engine_build, serving
from .gtt import GttPlan, plan_gtt, visible_gib
from .rocm import RocmPlan, plan_rocm
from .stack import StackPlan, covers, plan_stack, remediation_hint

SUPPORTED_DISTROS = {"debian", "ubuntu", "fedora"}
APT_DISTROS = {"debian", "ubuntu"}


@dataclass
class HostPlan:
    config: HaloConfig
    probe: dict[str, Any]
    distro: str
    gtt: GttPlan
    ttm_module: str
    kernel_params: list[str]
    modprobe: dict[str, dict[str, int]]
    expected_cmdline: list[str]
    reboot_needed: bool
    strix_halo: bool
    cwsr: dict[str, Any]
    rocm_message: str | None
    rocm: RocmPlan | None
    ids: serving.Ids
    serve: serving.ServePlan | None
    rpc: rpc.WorkerPlan | None = None  # an RPC worker's ggml-rpc-server
    rpc_members: list[rpc.Member] = field(default_factory=list)  # an RPC head's workers, in order
    rpc_group: list[str] = field(default_factory=list)  # the group's memory plan, for preflight
    memory: list[str] = field(default_factory=list)  # the KV-aware memory table or RPC split (modelmemory)
    warnings: list[str] = field(default_factory=list)
    stack: StackPlan | None = None  # halo_stack: the host's drift and the kernel stage's remediation
    carveout: tuple[str, int, int] | None = None  # (sysfs file, index now, index to write): the BIOS carve-out

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def uses_apt(self) -> bool:
        return self.distro in APT_DISTROS

    def gpu_check(self, passed: bool | None) -> str:
        """A GPU-only check's result: 'skipped' on hosts without a gfx1151 GPU, never 'passed'."""
        if not self.strix_halo or passed is None:
            return "skipped"
        return "ok" if passed else "missing"


def _distro(host: str, os_info: dict[str, Any]) -> str:
    ids = [os_info.get("id", "")] + os_info.get("id_like", "").split()
    for distro_id in ids:
        if distro_id in SUPPORTED_DISTROS:
            return distro_id
    raise HostRefused(
        host,
        f"unsupported distribution {os_info.get('pretty_name') or os_info.get('id') or 'unknown'!r}: "
        f"halofleet supports {', '.join(sorted(SUPPORTED_DISTROS))}",
    )


def build_plan(host: str, data: dict[str, Any], probe: dict[str, Any], config: HaloConfig | None = None,
               fleet: dict[str, dict[str, Any]] | None = None,
               worker_plans: dict[str, HostPlan | None] | None = None) -> HostPlan:
    """
    Validate ``data`` against the contract and the host's facts; raise ConfigError/HostRefused or plan.
    RPC groups also need ``fleet`` (every inventory host's data, by name) and, for a head, its workers' plans.
    """
    config = config or validate(host, data)
    warnings: list[str] = []
    distro = _distro(host, probe.get("os") or {})

    cwsr = probe.get("cwsr") or {"gfx1151_nodes": 0, "supported": None, "missing": []}
    strix_halo = cwsr["gfx1151_nodes"] > 0
    if not strix_halo and not config.allow_non_strix_halo:
        raise HostRefused(
            host,
            "no gfx1151 (Strix Halo) GPU found in the KFD topology; set halo_allow_non_strix_halo: true to run "
            "the stages on a test host (GPU checks are then reported as skipped)",
        )

    profile = stacks.resolve(config.stack)
    stack = None
    if profile is not None:
        build = engine_build.probed_build(probe)
        stack = plan_stack(profile, probe, apt=distro in APT_DISTROS, grub=config.boot == "manage",
                           image=serving.engine_image(config) if config.serve != "none" else None,
                           llama_build=build.build if build else None)
    firmware = probe.get("firmware")
    denied_firmware = policy.firmware_denied(firmware)
    if denied_firmware:
        message = f"linux-firmware {firmware} is refused: {denied_firmware}"
        if not covers(stack, "firmware"):
            raise HostRefused(host, f"{message}; {remediation_hint('firmware', profile)}")
        warnings.append(f"{message}: halo_stack {profile.name} replaces it in this run (then a reboot)")

    memtotal = probe.get("memtotal_kib")
    if not memtotal:
        raise HostRefused(host, "could not read MemTotal from /proc/meminfo")
    visible = visible_gib(memtotal)
    try:
        gtt = plan_gtt(visible, config.os_reserve_gib, config.gtt_gib)
    except ValueError as error:
        key = "halo_gtt_gib" if config.gtt_gib is not None else "halo_os_reserve_gib"
        raise ConfigError(host, key, config.values[key], str(error)) from None
    if gtt.fraction_of_ram > policy.GTT_WARN_FRACTION:
        warnings.append(
            f"GTT {gtt.gtt_gib} GiB is {gtt.fraction_of_ram:.0%} of the {visible} GiB Linux sees "
            f"(AMD's amd-ttm warns above {policy.GTT_WARN_FRACTION:.0%})"
        )

    rocm = probe.get("rocm") or {}
    if rocm.get("amdgpu_dkms") and not config.allow_amdgpu_dkms:
        raise HostRefused(
            host,
            "amdgpu-dkms is installed: it renames ttm to amdttm (ttm.pages_limit is then ignored) and conflicts "
            "with the in-tree driver on Strix Halo; remove it, or set halo_allow_amdgpu_dkms: true to use amdttm.*",
        )
    loaded = [name for name in policy.TTM_MODULES if name in ((probe.get("stack") or {}).get("ttm_modules") or {})]
    # The module present, in amd-smi's order (amdttm, amd_ttm, ttm) [C]; else what the packages say.
    ttm_module = loaded[0] if loaded else "amdttm" if rocm.get("amdgpu_dkms") else "ttm"

    has_cwsr_fix = cwsr["supported"]
    installed = rocm.get("version")
    if installed:
        reason = policy.rocm_denied(installed) if _is_release(installed) else None
        if reason:
            raise HostRefused(
                host, f"ROCm {installed} is installed and refused: {reason}; remove it or install another release"
            )
    rocm_message = None
    rocm_plan = None
    wanted = config.rocm_version
    if wanted != "none":
        verdict, rocm_message = policy.rocm_kernel_verdict(wanted, has_cwsr_fix)
        if verdict is policy.Verdict.BAD:
            raise ConfigError(host, "halo_rocm_version", wanted, rocm_message)
        if verdict is policy.Verdict.WARN:
            warnings.append(rocm_message)
        if distro not in APT_DISTROS:
            raise HostRefused(host, f"pinning host ROCm is implemented for apt hosts only, not {distro}")
        rocm_plan = plan_rocm(config, probe)
        if rocm_plan and not rocm_plan.therock and rocm.get("stream") == policy.RocmStream.THEROCK.value:
            # AMD documents the move from legacy to TheRock only; going back is left to the admin.
            warnings.append(f"TheRock ROCm {rocm.get('version')} is installed; legacy {wanted} is installed beside "
                            "it, not instead of it (remove the amdrocm* packages to go back)")
    elif installed and _is_release(installed):
        verdict, rocm_message = policy.rocm_kernel_verdict(installed, has_cwsr_fix)
        if verdict is policy.Verdict.BAD:
            raise HostRefused(host, f"installed {rocm_message}")
        if verdict is policy.Verdict.WARN:
            warnings.append(f"installed {rocm_message}")

    # First: on a gfx1151 the distro HIP backend cannot run at all, whatever the kernel.
    distro_hip = config.serve in ("llama-server", "rpc-worker") and config.llama_source == "distro" \
        and config.llama_backend == "hip"
    if strix_halo and distro_hip:
        raise ConfigError(
            host, "halo_llama_backend", "hip",
            "the distribution's libggml0-backend-hip has no gfx1151 code objects (gfx803-gfx1102 only) and links "
            "the distribution's ROCm 6, so it cannot use this GPU; use halo_llama_backend: vulkan (the distro "
            "path for Strix Halo), or halo_llama_source: toolbox for llama.cpp on ROCm",
        )
    engine = rocm_engine(config)
    if engine and has_cwsr_fix is False:
        message = (
            f"{engine} needs a kernel exporting the CWSR properties "
            f"({', '.join(cwsr['missing'])} missing on the gfx1151 KFD node), or it crashes on the wrong VGPR "
            "count (ROCm/TheRock#2991); update the kernel (generic >= 6.18.4, or a vendor kernel with the "
            "backport), or serve with halo_llama_backend: vulkan, which does not need it"
        )
        if config.cwsr_policy == "enforce" and not covers(stack, "kernel"):
            raise HostRefused(host, f"{message}; {remediation_hint('kernel', profile)}")
        warnings.append(message + (f" (halo_stack {profile.name} boots {profile.kernel_release.value} in this run)"
                                   if covers(stack, "kernel") else ""))
    warnings += _gpu_firmware_and_carveout(host, probe.get("amdgpu") or {}, strix_halo, stack)

    boot = probe.get("boot") or {"kind": "unknown", "cmdline": []}
    if boot["kind"] not in ("grub", "grubby") and config.boot == "manage":
        raise HostRefused(
            host, f"bootloader {boot['kind']!r} is not supported by the kernel stage (GRUB or grubby needed; "
                  "halo_boot: external leaves the cmdline to you)"
        )

    params = cmdline.KernelParams()
    params.add(policy.IOMMU_PARAMS[config.iommu], "kernel")
    params.add(f"{ttm_module}.pages_limit={gtt.pages_limit}", "memory")
    emit_gttsize = config.emit_gttsize
    if emit_gttsize is None:  # what the running kernel wants: 7.x logs a deprecation warning for it [C/S]
        emit_gttsize = _kernel_major((probe.get("os") or {}).get("kernel")) < policy.GTTSIZE_DEPRECATION_WARNS_FROM
    if emit_gttsize:
        # Deprecated upstream but still honoured; it must equal the TTM size or the driver logs "unusual".
        params.add(f"amdgpu.gttsize={gtt.gttsize_mib}", "memory")
    kernel_params = params.as_list()

    modprobe: dict[str, dict[str, int]] = {ttm_module: {"pages_limit": gtt.pages_limit}}
    if emit_gttsize:
        modprobe["amdgpu"] = {"gttsize": gtt.gttsize_mib}

    expected = cmdline.merge(boot["cmdline"], kernel_params)
    reboot_needed = not cmdline.satisfies(probe.get("live_cmdline") or [], kernel_params)
    carveout = _carveout(probe, stack)
    if stack is not None:
        warnings += stack.notes

    ids = serving.allocate_ids(config, probe.get("accounts") or {})
    worker = None
    if config.serve == "rpc-worker":
        if distro not in APT_DISTROS:
            raise HostRefused(host, f"RPC workers are built from Debian's llama.cpp packages: apt hosts only, not {distro}")
        worker = rpc.build_worker_plan(config, probe, fleet or {}, serving.memory_max_gib(config, visible))
    members, group = [], []
    if config.rpc_workers:
        workers = rpc.resolve_workers(config, fleet or {})
        members = rpc.head_members(config, workers, worker_plans or {})
        budgets = [rpc.GroupMember(host, "head", gtt.gtt_gib * rpc.GIB)] + [
            rpc.GroupMember(w.host, "worker", worker_plans[w.host].gtt.gtt_gib * rpc.GIB) for w in workers
        ]
        group = rpc.check_group_memory(config, budgets, _model_bytes(config, probe))
    serve = serving.build_serve_plan(config, probe, visible, ids, rpc_members=tuple(members))
    if config.llama_source == "distro" or config.serve == "rpc-worker":  # a toolbox's build is inside its image
        warnings += engine_build.check_builds(
            host, config.llama_backend, config.serve, engine_build.probed_build(probe),
            {m.name: engine_build.probed_build(worker_plans[m.name].probe) for m in members} if members else None)
    if serve and members and any(worker_plans[m.name].rpc.restart or worker_plans[m.name].rpc.start
                                 for m in members):
        # A worker (re)started in this run dropped the head's connection to it: the head loads again too.
        serve.restart, serve.start = True, False
    if serve:
        warnings += serve.warnings

    return HostPlan(
        config=config,
        probe=probe,
        distro=distro,
        gtt=gtt,
        ttm_module=ttm_module,
        kernel_params=kernel_params,
        modprobe=modprobe,
        expected_cmdline=expected,
        reboot_needed=reboot_needed,
        strix_halo=strix_halo,
        cwsr=cwsr,
        rocm_message=rocm_message,
        rocm=rocm_plan,
        ids=ids,
        serve=serve,
        rpc=worker,
        rpc_members=members,
        rpc_group=group,
        warnings=warnings,
        stack=stack,
        carveout=carveout,
    )


def _kernel_major(release: str | None) -> int:
    """The major number of ``uname -r`` (0 when unreadable: treated as an old kernel, gttsize emitted)."""
    head = (release or "").split(".", 1)[0]
    return int(head) if head.isdigit() and len(head) <= 4 else 0


def _carveout(probe: dict[str, Any], stack: StackPlan | None) -> tuple[str, int, int] | None:
    """
    With a stack profile on an apt host: the BIOS carve-out's sysfs file (Linux 7.0+, where the VBIOS allows:
    ``/sys/class/drm/<card>/device/uma/carveout``) and the index of its smallest option (``uma/carveout_options``);
    None when there is no such file or it is at the minimum already. The write applies at the next boot [C: the
    patch's commit message, torvalds/linux 685b711].
    """
    if stack is None or stack.kernel is None:
        return None
    state = probe.get("stack") or {}
    for path, index in sorted((state.get("carveout") or {}).items()):
        options = (state.get("carveout_options") or {}).get(path) or {}
        if index is None or not options:
            continue
        smallest = min(options, key=lambda key: (options[key], key))
        if index != smallest:
            return path, index, smallest
    return None


def _model_bytes(config: HaloConfig, probe: dict[str, Any]) -> int | None:
    """The served model file's size: the pushed local file, or the file on the host as probed (None: unknown)."""
    if config.model_push:
        return os.path.getsize(os.path.expanduser(config.model))
    model = probe.get("model") or {}
    return model.get("size") if model.get("kind") == "file" else None


def rocm_engine(config: HaloConfig) -> str | None:
    """The engine's name when it runs on ROCm (these need the CWSR kernel fix); None for Vulkan, CPU or none."""
    if config.serve == "vllm":
        return "vLLM on ROCm"
    if config.serve == "llama-server" and config.llama_backend == "hip":
        return f"llama-server on HIP/ROCm ({config.llama_source})"
    return None


def _gpu_firmware_and_carveout(host: str, amdgpu: dict[str, Any], strix_halo: bool,
                               stack: StackPlan | None = None) -> list[str]:
    """Refuse a denied MES firmware (unless this run's stack replaces it), warn below the minimum known good; warn
    about a large BIOS carve-out. Only on a gfx1151 host."""
    if not strix_halo:
        return []
    warnings = []
    profile = stack.profile if stack else None
    for version in amdgpu.get("mes") or []:
        reason = policy.MES_FIRMWARE_DENYLIST.get(version)
        if reason and not covers(stack, "firmware"):
            raise HostRefused(host, f"MES firmware {version:#x} is refused: {reason}; "
                                    f"{remediation_hint('firmware', profile)}")
        if reason:
            warnings.append(f"MES firmware {version:#x} is refused: {reason}; halo_stack {profile.name} installs "
                            "newer firmware in this run (then a reboot)")
        elif version < policy.MES_FIRMWARE_MIN:
            warnings.append(f"MES firmware {version:#x} is below {policy.MES_FIRMWARE_MIN:#x}, the oldest reported "
                            f"good; {remediation_hint('firmware', profile)}")
    if amdgpu.get("firmware_info") != "read":
        warnings.append("MES firmware version unknown (debugfs amdgpu_firmware_info not readable; mount debugfs "
                        "at /sys/kernel/debug to have it checked against the denylist)")
    for card, size in sorted((amdgpu.get("vram") or {}).items()):
        if size > policy.VRAM_CARVEOUT_WARN_GIB * 2**30:
            warnings.append(
                f"{card}: the BIOS carve-out (mem_info_vram_total) is {size / 2**30:g} GiB: memory the GTT budget "
                "(sized from MemTotal) cannot use; set the BIOS UMA frame buffer to its minimum (0.5-1 GB)"
            )
    return warnings


def _is_release(version: str) -> bool:
    try:
        policy.parse_rocm_version(version)
    except ValueError:
        return False
    return True
