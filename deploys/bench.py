"""llama-bench for each llama-server host's model (halofleet.stages.bench; `halofleet bench` runs it)."""

from halofleet.stages import bench

bench()
