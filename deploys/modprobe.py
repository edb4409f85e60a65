"""
Stage 3, modprobe: the same TTM/GTT limits as module options (a file that sorts after every other modprobe.d
file), so they hold whichever way the module loads; the initramfs is rebuilt only if the file changed and a
configured module is inside it.
"""

from halofleet.deploy import current_plan, managed_sha256
from halofleet.operations import halo_kernel
from halofleet.paths import MODPROBE_FILE

plan = current_plan()
if plan is not None:
    halo_kernel.modprobe_options(
        name="amdgpu/ttm module options",
        options=plan.modprobe,
        current_sha256=managed_sha256(plan, MODPROBE_FILE),
    )
