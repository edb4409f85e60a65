"""Settings every test tier shares."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def golden_directory(tmp_path_factory) -> None:
    """
    The correctness gate's goldens (halofleet.box.golden) go to a directory of this session, never the user's state
    directory: unit runs, containers and VMs alike, and one session's goldens never judge the next session's hosts.
    """
    from halofleet.box import golden

    os.environ[golden.DIR_ENV] = str(tmp_path_factory.mktemp("golden"))
