"""
Stage 1, preflight: gather every fact in one round trip, validate host data against it, report. Changes nothing;
a host that is refused here gets no operation from any later stage.
"""

from pyinfra import host, logger

from halofleet.deploy import current_plan

plan = current_plan()
if plan is not None:
    probe = plan.probe
    os_info = probe["os"]
    rocm = probe["rocm"]
    report = {
        "distro": os_info.get("pretty_name", plan.distro),
        "kernel": os_info.get("kernel", "?"),
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
    for key, value in report.items():
        logger.info(f"{host.print_prefix}preflight {key}: {value}")
