"""The whole host: every stage in order (halofleet.stages.full)."""

from halofleet.stages import full

full()
