"""The rocm stage alone (halofleet.stages.rocm)."""

from halofleet.stages import rocm

rocm()
