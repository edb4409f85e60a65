"""
``python benchmarks/counting_pyinfra.py COUNTS.json <pyinfra arguments...>``: the pyinfra CLI, unchanged, except that
its SSH connector counts what it sends to each host: shell commands (facts and operations alike) and file
uploads. The counts are written to COUNTS.json when the run ends.
"""

import atexit
import json
import sys
from collections import Counter

from pyinfra.connectors.ssh import SSHConnector

COMMANDS: Counter = Counter()
UPLOADS: Counter = Counter()

_run_shell_command = SSHConnector.run_shell_command
_put_file = SSHConnector.put_file


def run_shell_command(self, *args, **kwargs):
    COMMANDS[self.host.name] += 1
    return _run_shell_command(self, *args, **kwargs)


def put_file(self, *args, **kwargs):
    UPLOADS[self.host.name] += 1
    return _put_file(self, *args, **kwargs)


SSHConnector.run_shell_command = run_shell_command
SSHConnector.put_file = put_file


def _write(path: str) -> None:
    hosts = sorted(set(COMMANDS) | set(UPLOADS))
    with open(path, "w") as handle:
        json.dump({host: {"commands": COMMANDS[host], "uploads": UPLOADS[host]} for host in hosts}, handle)


if __name__ == "__main__":
    atexit.register(_write, sys.argv[1])
    sys.argv = ["pyinfra"] + sys.argv[2:]
    from pyinfra_cli.main import main

    main()
