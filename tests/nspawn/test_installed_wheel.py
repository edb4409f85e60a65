"""
halofleet as a user installs it: the wheel built from the checkout, installed into a fresh venv and with
``pip --user`` (a private PYTHONUSERBASE) outside the checkout; each one's ``halofleet init`` site, run from an
empty directory with ``--dry --diff`` against a fresh container, lists exactly the commands the checkout's
deploys/full.py lists for the same host and data (halofleet/testing/wheelsite.py, shared with
tests/vm/test_fleet.py's twin). The dry runs change nothing on the container.
"""

from __future__ import annotations

import pytest

from halofleet.testing import wheelsite

from .conftest import TIER_DATA

pytestmark = pytest.mark.nspawn

NOTHING = "find /etc/modprobe.d /etc/halofleet -name '*halofleet*' 2>/dev/null; getent passwd halo; true"


def test_installed_wheel_outside_the_checkout_plans_what_the_checkout_plans(network, tmp_path):
    (box,) = network.boot(["wheel1"])
    description = network.write_inventory(tmp_path / "hosts.json", group_data={**TIER_DATA, "halo_serve": "none"})
    lines = wheelsite.plans_like_the_checkout(tmp_path, description, (), "zz-halofleet.conf",
                                              prefix=tuple(network.prefix))
    assert lines > 10, lines
    assert box.ssh(NOTHING).stdout.strip() == ""
