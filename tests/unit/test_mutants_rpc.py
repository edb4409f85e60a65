"""
llama.cpp RPC groups at their edges (mutation-tested): every refusal across hosts' data word for word, who holds a
worker's port, the worker unit's rendered lines, the group's memory at its bound, and verify's cells. The expected
texts are written out by hand from the rules rpc.py states; none is computed by the code under test.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from halofleet.contract.config import ConfigError, HostRefused
from halofleet.fleet import rpc
from halofleet.models.specs import validate

from .test_rpc import HEAD, W1, fleet

GIB = 2**30
ONE_LINK = "the head reaches its workers over one private link"


def head_refusal(hosts) -> str:
    with pytest.raises(ConfigError) as error:
        rpc.resolve_workers(validate("head", hosts["head"]), hosts)
    return str(error.value)


def worker_refusal(name, hosts) -> str:
    with pytest.raises(ConfigError) as error:
        rpc.find_head(validate(name, hosts[name]), hosts)
    return str(error.value)


# -- the group across hosts' data -----------------------------------------------------------------------------

def test_a_heads_refusals_word_for_word():
    assert head_refusal(fleet(head={"halo_rpc_workers": ["w1", "w9"]})) == (
        "host 'head': halo_rpc_workers=['w1', 'w9'] is invalid: 'w9' is not a host of the inventory")
    assert head_refusal(fleet(w2={"halo_serve": "llama-server", "halo_model": "/m.gguf"})) == (
        "host 'head': halo_rpc_workers=['w1', 'w2'] is invalid: 'w2' is not an RPC worker (its halo_serve is "
        "llama-server, not rpc-worker)")
    assert head_refusal(fleet(other={**HEAD, "halo_rpc_address": "10.0.0.9", "halo_rpc_workers": ["w2"]})) == (
        "host 'head': halo_rpc_workers=['w1', 'w2'] is invalid: 'w2' is also named by other: a worker serves one "
        "head (its firewall lets one address in)")
    assert head_refusal(fleet(w1={"halo_rpc_address": "fd00::2"})) == (
        "host 'head': halo_rpc_address='10.0.0.1' is invalid: is not the same IP version as w1's halo_rpc_address "
        f"fd00::2: {ONE_LINK}")
    assert head_refusal(fleet(w2={"halo_rpc_port": "fifty"})).startswith(
        "host 'head': halo_rpc_workers=['w1', 'w2'] is invalid: its RPC worker 'w2' has invalid data (host 'w2': "
        "halo_rpc_port='fifty' is invalid: must be a whole number")


def test_a_workers_refusals_word_for_word():
    prefix = "halo_serve='rpc-worker' is invalid: "
    assert worker_refusal("w2", fleet(head={"halo_rpc_workers": ["w1"]})) == (
        f"host 'w2': {prefix}no host names it in halo_rpc_workers: a worker lends its memory to one head, and its "
        "firewall lets only that head's halo_rpc_address in")
    assert worker_refusal("w2", fleet(other={**HEAD, "halo_rpc_address": "10.0.0.9", "halo_rpc_workers": ["w2"]})) \
        == (f"host 'w2': {prefix}named by several heads (head, other) in halo_rpc_workers: a worker serves one head "
            "(its firewall lets one address in)")
    odd_head = fleet(head={"halo_rpc_workers": ["w2"]}, **{"odd head": {**HEAD, "halo_rpc_workers": ["w1"]}})
    assert worker_refusal("w1", odd_head) == (
        f"host 'w1': {prefix}its RPC head 'odd head' is not an inventory host name (letters, digits and . _ - + @ : "
        "/ only)")
    assert worker_refusal("w1", fleet(head={"halo_port": "x"})).startswith(
        f"host 'w1': {prefix}its RPC head 'head' has invalid data (host 'head': halo_port='x' is invalid: ")
    assert worker_refusal("w1", fleet(w1={"halo_rpc_address": "fd00::2"})) == (
        "host 'w1': halo_rpc_address='fd00::2' is invalid: is not the same IP version as head's halo_rpc_address "
        f"10.0.0.1: {ONE_LINK}")


def test_a_host_with_bad_worker_data_before_the_head_is_skipped():
    hosts = {"broken": {"halo_rpc_workers": 5}, **fleet()}
    assert rpc.heads_of("w1", hosts) == ["head"]


# -- the worker -----------------------------------------------------------------------------------------------

def worker_plan(probe, memory=12):
    return rpc.build_worker_plan(validate("w1", W1), {"files": {}, **probe}, fleet(), memory)


@pytest.mark.parametrize("state", ["active", "activating", "reloading", "deactivating"])
def test_our_own_worker_holds_its_port_in_any_live_state(state):
    plan = worker_plan({"rpc": {"active": state}, "serve": {"listeners": [["10.0.0.2", 50052]]}})
    assert plan.endpoint == "10.0.0.2:50052"


def test_another_holder_of_the_port_refuses_word_for_word_and_other_addresses_do_not():
    with pytest.raises(HostRefused) as error:
        worker_plan({"rpc": {"active": "failed"}, "serve": {"listeners": [["10.0.0.2", 50052]]}})
    assert str(error.value) == ("host 'w1': port 50052 is already in use on 10.0.0.2 by another program (choose "
                                "another halo_rpc_port or stop that program)")
    plan = worker_plan({"rpc": {"active": "failed"}, "serve": {"listeners": [["10.0.0.9", 50052], ["10.0.0.2", 1]]}})
    assert (plan.head, plan.head_address, plan.endpoint) == ("head", "10.0.0.1", "10.0.0.2:50052")


def test_the_worker_unit_names_its_backend_head_port_and_memory_cap():
    lines = worker_plan({"rpc": {}, "serve": {"listeners": []}}, memory=12).unit.splitlines()
    for line in ("# A llama.cpp RPC worker: lends this box's cpu memory to the head head (10.0.0.1).",
                 "Description=halofleet llama.cpp RPC worker (cpu backend) for head",
                 "# Started means listening on 10.0.0.2:50052 (read from /proc, no connection: the firewall would "
                 "drop it).",
                 "MemoryMax=12G"):
        assert line in lines, line


# -- the group's memory and verify ----------------------------------------------------------------------------

def test_weights_exactly_the_groups_gtt_fit_and_one_byte_more_does_not():
    config = SimpleNamespace(host="hd", model="/m.gguf")
    members = [rpc.GroupMember("a", "head", GIB), rpc.GroupMember("b", "worker", GIB)]
    assert rpc.check_group_memory(config, members, 2 * GIB) == ["RPC group GTT 2 GiB: a (head) 1 GiB, b (worker) 1 GiB"]
    with pytest.raises(HostRefused) as error:
        rpc.check_group_memory(config, members, 2 * GIB + 1)
    assert str(error.value) == ("host 'hd': model /m.gguf (2.0 GiB of weights) does not fit the RPC group's GTT "
                                "(2 GiB: a (head) 1 GiB, b (worker) 1 GiB)")


@pytest.mark.parametrize("worker_plan_value", [SimpleNamespace(rpc=None), SimpleNamespace(), None])
def test_a_worker_without_an_rpc_plan_refuses_its_head_word_for_word(worker_plan_value):
    worker = validate("w1", W1)
    with pytest.raises(HostRefused) as error:
        rpc.head_members(SimpleNamespace(host="head"), [worker], {"w1": worker_plan_value})
    assert str(error.value) == ("host 'head': RPC worker 'w1' has no plan in this run (refused, unreachable or left "
                                "out with --limit): the head starts only once every worker it names is serving")


def test_head_cell_for_a_worker_seen_without_weights():
    plan = SimpleNamespace(rpc_members=[rpc.Member("w1", "10.0.0.2", 50052, "d")])
    assert rpc.head_cell(plan, {"devices": ["10.0.0.2:50052"], "buffers": {}}) == ("head: w1 seen, no weights", True)


def test_worker_cell_when_down_and_when_listening_nowhere():
    plan = SimpleNamespace(config=validate("w1", W1), rpc=SimpleNamespace(head="head", endpoint="10.0.0.2:50052"))
    assert rpc.worker_cell(plan, {"rpc": {"active": "inactive"}}) == ("worker of head: halo-rpc inactive", False)
    assert rpc.worker_cell(plan, {"rpc": {"active": "active", "table": True}, "serve": {"listeners": []}}) == \
        ("worker of head: listening on nothing, not 10.0.0.2 only", False)


def test_a_worker_named_by_two_other_heads_lists_both():
    hosts = fleet(x1={**HEAD, "halo_rpc_address": "10.0.0.8", "halo_rpc_workers": ["w2"]},
                  x2={**HEAD, "halo_rpc_address": "10.0.0.9", "halo_rpc_workers": ["w2"]})
    assert head_refusal(hosts) == (
        "host 'head': halo_rpc_workers=['w1', 'w2'] is invalid: 'w2' is also named by x1, x2: a worker serves one "
        "head (its firewall lets one address in)")
