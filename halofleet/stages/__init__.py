"""
halofleet's deploys as ``@deploy`` functions (pyinfra's way of shipping reusable deploys): call them from your
own deploy file.

    from halofleet.stages import full
    full()

Each stage is also usable alone (``kernel()``, ``rpc()``, ``serve()``, ``monitor()``, ...); ``full()`` runs them in order. modprobe runs
before kernel so the one reboot picks up both. A stage does nothing on a host halofleet refused.

Stages sit at the top with the CLI: they may import every other package (operations, facts, views for the
run summary, :mod:`halofleet.deploy` for the per-host plan); nothing but the starter site and the CLI imports them.
"""

from pyinfra.api import deploy

from .gateway import gateway
from .monitor import monitor
from .rpc import rpc
from .serve import bench, serve
from .system import cwsr, kernel, modprobe, preflight, rocm, runtime
from .undo import rollback

__all__ = ["full", "preflight", "modprobe", "kernel", "rocm", "cwsr", "runtime", "rpc", "serve", "bench",
           "gateway", "monitor", "rollback"]


@deploy("halofleet")
def full() -> None:
    """The whole host: preflight, modprobe, kernel, rocm, cwsr, runtime, rpc, serve (RPC workers before heads);
    gateway on halo_gateway hosts; monitor (node exporter everywhere, Prometheus on the halo_monitor host) when the
    inventory has a monitor host."""
    preflight()
    modprobe()
    kernel()
    rocm()
    cwsr()
    runtime()
    rpc()
    serve()
    gateway()
    monitor()
