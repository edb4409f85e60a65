"""Data for every host (halofleet options lists every halo_* key). Secrets come from the environment."""

import os

ssh_user = "root"
halo_reboot_batch = 1  # reboot one host at a time
halo_restart_batch = 1  # restart (or benchmark) one engine at a time: the rest of the fleet keeps serving
halo_reboot_timeout = 900
# None keeps each engine on loopback; with a key the engines may listen beyond the host.
halo_api_key = os.environ.get("HALO_API_KEY")
