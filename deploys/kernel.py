"""
Stage 2, kernel: the Strix Halo cmdline (iommu choice, TTM/GTT limits sized from MemTotal) through a GRUB drop-in
or grubby, then a reboot only if the live cmdline differs, in batches (one host at a time by default), each
host checked to be back with the new cmdline before the next batch goes down.
"""

from pyinfra import host, logger

from halofleet.deploy import current_plan, managed_sha256, reboot_batch
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
        halo_kernel.reboot(
            name="Reboot into the new kernel cmdline",
            timeout=plan.config.reboot_timeout,
            expect_params=plan.kernel_params,
            _if=lambda: configure.did_change() or plan.reboot_needed,
            _parallel=reboot_batch(),  # rolling: batches of halo_reboot_batch hosts (default 1), checked in turn
        )
    elif plan.reboot_needed or configure.will_change:
        logger.warning(f"{host.print_prefix}halofleet: reboot pending (halo_reboot: never); "
                       "the new cmdline applies at the next boot")
