"""
The host stages of a deploy, one ``@deploy`` function each: preflight, modprobe, kernel, rocm, cwsr, runtime.
Every stage reads this host's plan (validated data + one probe, see :mod:`halofleet.deploy`) and does nothing on
a refused host.
"""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.operations import apt, dnf, server, systemd

from ..contract import policy
from ..contract.paths import GRUB_DROPIN, MODPROBE_FILE, ROCM_PIN
from ..deploy import current_plan, managed_sha256, reboot_batch
from ..operations import halo_files, halo_kernel, halo_rocm, halo_serve, halo_stack
from ..views import summary


@deploy("preflight")
def preflight() -> None:
    """
    Stage 1: gather every fact in one round trip, validate host data against it, report. Changes nothing; a host
    refused here gets no operation from any later stage.
    """
    summary.install()
    plan = current_plan()
    if plan is None:
        return
    probe = plan.probe
    rocm = probe["rocm"]
    report = {
        "distro": probe["os"].get("pretty_name", plan.distro),
        "kernel": probe["os"].get("kernel", "?"),
        "memory": f"{plan.gtt.visible_gib} GiB visible (MemTotal) -> GTT {plan.gtt.gtt_gib} GiB",
        "gpu": "gfx1151" if plan.strix_halo else "no gfx1151 (allowed by halo_allow_non_strix_halo)",
        "bootloader": probe["boot"]["kind"],
        "rocm": rocm.get("version") or "none installed",
        "firmware": probe.get("firmware") or "unknown",
        "runtimes": ", ".join(sorted(probe["runtimes"])) or "none",
        "cwsr": plan.gpu_check(plan.cwsr["supported"]),
        "reboot needed": "yes" if plan.reboot_needed else "no",
        "serving": (f"{plan.serve.engine} ({plan.serve.flavour}) on {plan.serve.url}, now {probe['serve']['active']}"
                    if plan.serve else "none (halo_serve: none)"),
    }
    if plan.rpc:
        report["rpc worker"] = (f"ggml-rpc-server on {plan.rpc.endpoint} for {plan.rpc.head} "
                                f"({plan.rpc.head_address} only), now {probe['rpc']['active']}")
    if plan.rpc_members:
        report["rpc head"] = ", ".join(f"{member.name} ({member.endpoint})" for member in plan.rpc_members)
        report["rpc memory"] = "; ".join(plan.rpc_group)
    for key, value in report.items():
        logger.info(f"{host.print_prefix}preflight {key}: {value}")
    for line in plan.memory:
        logger.info(f"{host.print_prefix}preflight memory plan: {line.strip()}")


@deploy("modprobe")
def modprobe() -> None:
    """
    Stage 3: the same TTM/GTT limits as module options (a file that sorts after every other modprobe.d file), so
    they hold whichever way the module loads; the initramfs is rebuilt only if the file changed and a configured
    module is inside it.
    """
    summary.install()
    plan = current_plan()
    if plan is None:
        return
    halo_kernel.modprobe_options(
        name="amdgpu/ttm module options",
        options=plan.modprobe,
        current_sha256=managed_sha256(plan, MODPROBE_FILE),
    )


@deploy("kernel")
def kernel() -> None:
    """
    Stage 2: the Strix Halo cmdline (iommu choice, TTM/GTT limits sized from MemTotal) through a GRUB drop-in or
    grubby, then a reboot only if the live cmdline differs, in batches (one host at a time by default), each host
    checked to be back with the new cmdline before the next batch goes down.
    """
    summary.install()
    plan = current_plan()
    if plan is None:
        return
    stack_changes = _stack(plan)
    if plan.config.boot == "external":
        if plan.reboot_needed:
            logger.warning(f"{host.print_prefix}halofleet: the live cmdline lacks {' '.join(plan.kernel_params)} "
                           "(halo_boot: external: set it where the bootloader is managed)")
        if plan.stack is not None and plan.stack.firmware is not None and plan.stack.firmware.install \
                or plan.carveout is not None:
            logger.warning(f"{host.print_prefix}halofleet: reboot pending (halo_boot: external): the new firmware "
                           "or carve-out applies at the next boot")
        return
    if plan.probe["boot"]["kind"] == "grub":
        entry = plan.stack.grub_entry if plan.stack else None
        release = plan.stack.profile.kernel_release.value if entry else None
        configure = halo_kernel.grub_cmdline(
            name="Strix Halo kernel cmdline (GRUB drop-in)" + (f", default kernel {release}" if entry else ""),
            params=plan.kernel_params,
            current_sha256=managed_sha256(plan, GRUB_DROPIN),
            default=entry,
            kernel_file=f"/boot/vmlinuz-{release}" if entry else None,
        )
    else:
        configure = halo_kernel.grubby_cmdline(
            name="Strix Halo kernel cmdline (grubby)",
            params=plan.kernel_params,
            configured=plan.probe["boot"]["cmdline"],
        )

    stack_reboot = plan.stack is not None and plan.stack.reboot_needed or plan.carveout is not None
    if plan.config.reboot == "auto":
        kernel = plan.stack.profile.kernel_release.value if plan.stack and plan.stack.grub_entry else None
        halo_kernel.reboot(
            name="Reboot into the new kernel cmdline" + (f" and kernel {kernel}" if kernel else ""),
            timeout=plan.config.reboot_timeout,
            expect_params=plan.kernel_params,
            expect_kernel=kernel,
            _if=lambda: configure.did_change() or plan.reboot_needed or stack_reboot
            or any(op.did_change() for op in stack_changes),
            _parallel=reboot_batch(),  # rolling: batches of halo_reboot_batch hosts (default 1), checked in turn
        )
    elif plan.reboot_needed or configure.will_change or stack_reboot:
        logger.warning(f"{host.print_prefix}halofleet: reboot pending (halo_reboot: never); "
                       "the new cmdline, kernel or carve-out applies at the next boot")


def _stack(plan) -> list:
    """
    halo_stack's remediation, before the cmdline so one reboot serves both: the profile's kernel and firmware
    packages installed and held, the carve-out set (GRUB's default goes into the cmdline's drop-in). Returns the
    operations whose change needs a reboot.
    """
    stack, changes = plan.stack, []
    if stack is None:
        return changes
    profile = stack.profile
    if stack.kernel is not None:
        halo_stack.package_held(
            name=f"Kernel of stack {profile.name}: {stack.kernel.package} installed and held",
            package=stack.kernel.package, version=stack.kernel.version, install=stack.kernel.install,
            hold=stack.kernel.hold,
        )
    if stack.firmware is not None:
        changes.append(halo_stack.package_held(
            name=f"Firmware of stack {profile.name}: {stack.firmware.package} installed and held",
            package=stack.firmware.package, version=stack.firmware.version, install=stack.firmware.install,
            hold=stack.firmware.hold,
        ))
    if plan.carveout is not None:
        path, previous, index = plan.carveout
        changes.append(halo_stack.carveout(name=f"BIOS carve-out to its smallest option ({path})", path=path,
                                           index=index, previous=previous))
    return changes


@deploy("rocm")
def rocm() -> None:
    """
    Stage 4: with halo_rocm_version set, add the repository of the release's stream (legacy <= 7.2.x, TheRock
    7.14+/10.x; the other streams' sources and keys are removed), pin the release (denied releases barred),
    remove a legacy stack before TheRock as AMD asks, and install it. With 'none', only the preflight checks of
    what is installed apply.
    """
    summary.install()
    plan = current_plan()
    if plan is None or plan.rocm is None:
        return
    rocm_plan, files = plan.rocm, plan.probe["files"]
    version, kind = rocm_plan.version, "TheRock" if rocm_plan.therock else "legacy"
    for path in rocm_plan.stale_files:
        halo_files.absent_file(name=f"Remove {path} (not ROCm {version}'s)", path=path,
                               current_sha256=files.get(path))
    where = f" ({rocm_plan.suite_dir})" if rocm_plan.suite_dir else ""
    halo_rocm.repository(
        name=f"ROCm {version} apt repository ({kind}{where})",
        url=rocm_plan.url,
        suite=rocm_plan.suite,
        key_url=rocm_plan.key_url,
        path=rocm_plan.sources_path,
        key_path=rocm_plan.key_path,
        key_binary=rocm_plan.key_binary,
        deb822=rocm_plan.deb822,
        current=files,
    )
    if rocm_plan.therock:
        halo_rocm.pin(
            name=f"Pin ROCm to {version} ({', '.join(rocm_plan.pin_packages)} {rocm_plan.pin_version})",
            version=version,
            packages=rocm_plan.pin_packages,
            pin_version=rocm_plan.pin_version,
            current_sha256=managed_sha256(plan, ROCM_PIN),
        )
        if rocm_plan.remove_legacy:
            halo_rocm.legacy_removed(
                name=f"Remove legacy ROCm {rocm_plan.remove_legacy} before TheRock {version}",
                legacy=rocm_plan.remove_legacy,
                version=version,
            )
        halo_rocm.therock_release(
            name=f"Install ROCm {version} (TheRock, {', '.join(rocm_plan.packages)})",
            version=version,
            packages=rocm_plan.packages,
            installed=rocm_plan.installed_packages,
            pin_version=rocm_plan.pin_version,
        )
        return
    halo_rocm.pin(
        name=f"Pin ROCm to {version}",
        version=version,
        current_sha256=managed_sha256(plan, ROCM_PIN),
    )
    halo_rocm.release(
        name=f"Install ROCm {version}",
        version=version,
        packages=rocm_plan.packages,
        installed=plan.probe["rocm"].get("legacy"),
    )


@deploy("cwsr")
def cwsr() -> None:
    """
    Stage 5: report whether the running kernel exports the CWSR properties ROCm engines need. The refusal itself
    happens in preflight, before any change.
    """
    summary.install()
    plan = current_plan()
    if plan is None:
        return
    status = plan.gpu_check(plan.cwsr["supported"])
    detail = f" (missing: {', '.join(plan.cwsr['missing'])})" if plan.cwsr["missing"] else ""
    logger.info(f"{host.print_prefix}CWSR kernel support: {status}{detail}")


@deploy("runtime")
def runtime() -> None:
    """Stage 6: podman (or docker where asked) and the non-root service user with GPU access (video/render)."""
    summary.install()
    plan = current_plan()
    if plan is None:
        return
    engine = plan.config.runtime
    packages = list(policy.RUNTIME_PACKAGES[engine])
    if plan.uses_apt:
        apt.packages(name=f"Install {engine}", packages=packages, no_recommends=True,
                     extra_install_args=policy.APT_LOCK_WAIT)
    else:
        dnf.packages(name=f"Install {engine}", packages=packages)
    if engine == "docker":
        systemd.service(name="Docker daemon running", service="docker", running=True, enabled=True)
    # Ids decided in the plan (existing ones kept), so container units can name them before the user exists.
    ids, user = plan.ids, plan.config.service_user
    for group, gid in ids.new_groups.items():
        server.group(name=f"Group {group} (gid {gid})", group=group, gid=gid, system=True)
    server.user(
        name=f"Service user {user} with GPU access",
        user=user,
        uid=ids.uid if ids.new_user else None,
        group=user if ids.new_user else None,
        system=True,
        home=f"/var/lib/{user}",
        create_home=True,
        shell="/usr/sbin/nologin",
        groups=list(policy.GPU_GROUPS),
    )
    records = (plan.probe.get("backups") or {}).get("records") or []
    halo_serve.user_origin_recorded(
        name=f"Record whether {user} is halofleet's own account", user=user, created=ids.new_user,
        recorded=any(name in records for name in (f"user__{user}.created", f"user__{user}.existed")),
    )
    devices = plan.probe["os"].get("devices", [])
    kfd = "/dev/kfd" in devices
    dri = any(device.startswith("/dev/dri/") for device in devices)
    logger.info(f"{host.print_prefix}GPU devices: /dev/kfd {plan.gpu_check(kfd)}, /dev/dri render {plan.gpu_check(dri)}")
