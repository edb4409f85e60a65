"""The preflight stage alone (halofleet.stages.preflight)."""

from halofleet.stages import preflight

preflight()
