"""The runtime stage alone (halofleet.stages.runtime)."""

from halofleet.stages import runtime

runtime()
