"""
The rules between hosts: llama.cpp RPC groups (:mod:`.rpc`: a head and the workers that lend it memory, their
firewall and ports) and the haproxy gateway in front of the fleet (:mod:`.gateway`: pools, routing, TLS, the
stats socket, draining a backend) and the fleet's monitoring (:mod:`.monitor`: Prometheus's targets, credentials
and alert rules, node exporter's exposure rule). Pure functions over the whole inventory's data; imports :mod:`halofleet.contract` and
:mod:`halofleet.models` only, and one host's plan (:mod:`halofleet.box`) builds on it.
"""
