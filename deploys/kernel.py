"""
Stage 2, kernel: the Strix Halo cmdline (iommu choice, TTM/GTT limits sized from MemTotal) through a GRUB drop-in
or grubby, then a reboot only if the live cmdline differs, one host at a time, and a check that it took.
"""

from pyinfra import host, logger

from halofleet.deploy import current_plan, managed_sha256
from halofleet.operations import halo_kernel
from halofleet.paths import GRUB_DROPIN

plan = current_plan()
if plan is not None:
    if plan.probe["boot"]["kind"] == "grub":
        configure = halo_kernel.grub_cmdline(
            name="Strix Halo kernel cmdline (GRUB drop-in)",
            params=plan.kernel_params,
            current_sha256=managed_sha256(plan, GRUB_DROPIN),
        )
    else:
        configure = halo_kernel.grubby_cmdline(
            name="Strix Halo kernel cmdline (grubby)",
            params=plan.kernel_params,
            configured=plan.probe["boot"]["cmdline"],
        )

    if plan.config.reboot == "auto":
        reboot = halo_kernel.reboot(
            name="Reboot into the new kernel cmdline",
            timeout=plan.config.reboot_timeout,
            _if=lambda: configure.did_change() or plan.reboot_needed,
            _parallel=1,  # rolling: never more than one host down at a time
        )
        halo_kernel.verify_live_cmdline(
            name="Check the new cmdline is live",
            params=plan.kernel_params,
            _if=reboot.did_change,
        )
    elif plan.reboot_needed or configure.will_change:
        logger.warning(f"{host.print_prefix}halofleet: reboot pending (halo_reboot: never); "
                       "the new cmdline applies at the next boot")
