"""
The apt and kernel files halofleet writes, read back as apt and modprobe read them: every form of the ROCm source
(one-line and deb822, signed and a trusted local repository), the pin's stanzas (the release held at 1001, every
denied release barred at -1, pre-releases and bare revisions included), and the modprobe options.
"""

from __future__ import annotations

import pytest

from halofleet.contract import policy
from halofleet.contract.paths import ROCM_KEY, ROCM_KEY_THEROCK
from halofleet.operations.halo_kernel import render_modprobe
from halofleet.operations.halo_rocm import LEGACY_PIN_PACKAGES, render_pin, render_sources

URL = "https://repo.amd.com/rocm/packages-multi-arch/ubuntu2404"


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize("key, options", [(ROCM_KEY_THEROCK, f"signed-by={ROCM_KEY_THEROCK}"),
                                          (None, "trusted=yes")])
def test_the_one_line_source(key, options):
    assert lines(render_sources(URL, "stable", key, deb822=False)) == [f"deb [arch=amd64 {options}] {URL} stable main"]


@pytest.mark.parametrize("key, last", [(ROCM_KEY, f"Signed-By: {ROCM_KEY}"), (None, "Trusted: yes")])
def test_the_deb822_source(key, last):
    assert lines(render_sources(URL, "noble", key)) == [
        "Types: deb", f"URIs: {URL}", "Suites: noble", "Components: main", last]


def stanzas(text: str) -> list[dict[str, str]]:
    found, current = [], {}
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                found.append(current)
            current = {}
            continue
        key, _, value = line.partition(": ")
        assert key not in current, line
        current[key] = value
    return found


def test_the_pin_holds_the_release_and_bars_every_denied_one():
    held, *barred = stanzas(render_pin("7.2.1"))
    assert held == {"Package": " ".join(LEGACY_PIN_PACKAGES), "Pin": "version 7.2.1.*", "Pin-Priority": "1001"}
    expected = []
    for denied in policy.ROCM_DENYLIST:
        expected += [{"Package": "rocm*", "Pin": f"version {denied}{suffix}", "Pin-Priority": "-1"}
                     for suffix in (".*", "~*", "-*")]
    assert barred == expected and expected
    text = render_pin("7.2.1")
    for denied, reason in policy.ROCM_DENYLIST.items():
        assert f"# refused: {reason}" in text


def test_a_therock_pin_holds_its_packages_at_the_patch_level():
    held = stanzas(render_pin("7.14.1", ["amdrocm7.14-gfx1151", "amdrocm-core7.14"], "7.14.1-*"))[0]
    assert held == {"Package": "amdrocm7.14-gfx1151 amdrocm-core7.14", "Pin": "version 7.14.1-*",
                    "Pin-Priority": "1001"}


def test_the_modprobe_options_one_line_per_module():
    text = render_modprobe({"ttm": {"pages_limit": 31457280}, "amdgpu": {"gttsize": 122880, "x": "y"}, "none": {}})
    assert lines(text) == ["options ttm pages_limit=31457280", "options amdgpu gttsize=122880 x=y"]
