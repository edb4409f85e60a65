"""Data for every host (halofleet options lists every halo_* key). Secrets come from the environment."""

import os

ssh_user = "root"
halo_reboot_batch = 1  # reboot one host at a time
halo_restart_batch = 1  # restart (or benchmark) one engine at a time: the rest of the fleet keeps serving
halo_reboot_timeout = 900
# None keeps each engine on loopback; with a key the engines may listen beyond the host.
halo_api_key = os.environ.get("HALO_API_KEY")
# One pinned stack for the fleet (README "Stack profiles"): verify shows each host's drift from it, and the kernel
# stage installs and holds its kernel and firmware packages and boots its kernel. Unset: nothing is pinned.
# halo_stack = "ubuntu-26.04-2026-12"
