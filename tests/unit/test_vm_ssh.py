"""The VM tier's SSH helper: a connection that fails before the command starts is tried again, nothing else is."""

import socket
import threading
import time

from halofleet.testing import vm as vm_mod


def silent_listener() -> tuple[socket.socket, list[float]]:
    """A loopback port that accepts connections and never sends an SSH banner (a guest too busy to answer)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[float] = []
    held: list[socket.socket] = []

    def accept():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            accepted.append(time.monotonic())
            held.append(connection)

    threading.Thread(target=accept, daemon=True).start()
    return server, accepted


def test_a_banner_that_never_comes_is_asked_again_then_reported(tmp_path):
    server, accepted = silent_listener()
    try:
        machine = vm_mod.VM(name="busy", disk=tmp_path / "disk", workdir=tmp_path, port=server.getsockname()[1])
        result = machine.ssh("true", check=False, attempts=3, connect_timeout=1, timeout=60)
    finally:
        server.close()
    assert result.returncode == 255 and "banner exchange" in result.stderr
    assert len(accepted) == 3  # each attempt reached the port; the command never ran


def test_a_refused_connection_is_asked_again_and_a_command_failure_is_not(tmp_path, monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again: nothing listens there
    machine = vm_mod.VM(name="down", disk=tmp_path / "disk", workdir=tmp_path, port=port)
    calls = []
    real_run = vm_mod.subprocess.run

    def counting_run(*args, **kwargs):
        calls.append(args[0])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(vm_mod.subprocess, "run", counting_run)
    refused = machine.ssh("true", check=False, attempts=2, connect_timeout=1, timeout=60)
    assert refused.returncode == 255 and "Connection refused" in refused.stderr and len(calls) == 2

    # the command ran and exited 255 itself: never run twice
    calls.clear()
    monkeypatch.setattr(vm_mod.subprocess, "run", lambda *args, **kwargs: calls.append(args[0]) or
                        vm_mod.subprocess.CompletedProcess(args[0], 255, "", "remote: exit 255"))
    ran = machine.ssh("exit 255", check=False, attempts=3)
    assert ran.returncode == 255 and len(calls) == 1
