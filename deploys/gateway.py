"""The gateway stage alone (halofleet.stages.gateway): haproxy on the hosts with halo_gateway: true."""

from halofleet.stages import gateway

gateway()
