"""The modprobe stage alone (halofleet.stages.modprobe)."""

from halofleet.stages import modprobe

modprobe()
