"""The kernel stage alone (halofleet.stages.kernel)."""

from halofleet.stages import kernel

kernel()
