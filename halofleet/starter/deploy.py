"""Every halofleet stage on every host of the inventory (pyinfra -y inventory.py deploy.py)."""

from halofleet.stages import full

full()
