"""The RPC stage alone (halofleet.stages.rpc): llama.cpp RPC workers."""

from halofleet.stages import rpc

rpc()
