"""
The baseline for benchmarks/provision.py: what a plain pyinfra deploy of 8 stock operations costs, so halofleet's
figures are read against pyinfra itself on the same VMs in the same run. 3 files.put, apt.packages, server.group,
server.user, a unit file and systemd.service (daemon_reload=True, as a deploy installing a unit would).
"""

from io import StringIO

from pyinfra.operations import apt, files, server, systemd

for index in range(3):
    files.put(name=f"Config file {index}", src=StringIO(f"setting_{index} = {index}\n"),
              dest=f"/etc/baseline-{index}.conf", mode="0644")
apt.packages(name="Packages", packages=["curl"], no_recommends=True)
server.group(name="Group", group="baseline", system=True)
server.user(name="User", user="baseline", group="baseline", system=True, home="/var/lib/baseline",
            shell="/usr/sbin/nologin")
files.put(name="Unit file", src=StringIO("[Unit]\nDescription=baseline\n[Service]\nExecStart=/bin/sleep infinity\n"
                                          "User=baseline\n[Install]\nWantedBy=multi-user.target\n"),
          dest="/etc/systemd/system/baseline.service", mode="0644")
systemd.service(name="Service", service="baseline.service", running=True, enabled=True, daemon_reload=True)
