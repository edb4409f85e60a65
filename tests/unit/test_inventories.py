"""The example inventory is valid host data (it is what users copy first)."""

from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

from halofleet.models.specs import validate


def test_example_fleet_validates(monkeypatch):
    monkeypatch.setenv("HALO_API_KEY", "sk-example-fleet-key-0123456789")
    with ctx_state.use(State()):
        inventory = make_inventory("inventories/halo.py")
    configs = {host.name: validate(host.name, host.data.dict()) for host in inventory}
    assert set(configs) == {"halo-01.example.lan", "halo-02.example.lan", "halo-03.example.lan"}
    assert configs["halo-03.example.lan"].serve == "vllm"
    assert configs["halo-01.example.lan"].bind == "0.0.0.0"  # an API key lets it listen beyond loopback
    assert all(config.reboot_batch == 1 for config in configs.values())


def test_readme_documents_every_host_data_key():
    from pathlib import Path

    from halofleet.contract.config import describe_options

    assert describe_options() in Path("README.md").read_text(), "README's host-data table is stale"
