"""The serve stage (halofleet.stages.serve), after the RPC workers its heads need (halofleet.stages.rpc)."""

from halofleet.stages import rpc, serve

rpc()
serve()
