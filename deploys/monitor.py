"""The monitor stage alone (halofleet.stages.monitor): node exporter everywhere, Prometheus on the monitor host."""

from halofleet.stages import monitor

monitor()
