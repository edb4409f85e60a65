"""halofleet diff on fake hosts: every change listed with its commands, the API key nowhere in the Markdown."""

import json

from halofleet.testing.fake import PROBE_MARK, probe_output
from halofleet.views.review import review, to_markdown

SECRET = "sk-halofleet-review-0123456789"


def write_inventory(tmp_path, hosts: dict) -> str:
    entries = []
    for name, (data, probe) in hosts.items():
        data = {**data, "fake_delay": 0, "fake_delay_jitter": 0,
                "fake_responses": {PROBE_MARK: {"stdout": probe}, "uname -s": "Linux",
                                   "command -v useradd": "/usr/sbin/useradd"}}
        entries.append((f"@fake/{name}", data))
    path = tmp_path / "inventory.py"
    path.write_text(f"import json\nhosts = ([tuple(e) for e in json.loads({json.dumps(json.dumps(entries))})], "
                    "{'halo_allow_non_strix_halo': True})\n")
    return str(path)


def test_review_lists_changes_without_the_secret(tmp_path):
    good = {"halo_model": "/srv/models/tiny.gguf", "halo_llama_backend": "cpu", "halo_api_key": SECRET,
            "halo_reboot": "never"}
    typo = {key: value for key, value in good.items() if key != "halo_api_key"}
    inventory = write_inventory(tmp_path, {"fresh": (good, probe_output()),
                                           "broken": ({**good, "halo_rocm_version": "7.0.1"}, probe_output()),
                                           "typo": ({**typo, "halo_api_keys": SECRET}, probe_output())})
    reviews = {item.host: item for item in review(inventory, "deploys/full.py")}
    assert reviews["@fake/broken"].status == "refused" and "7.0.1" in reviews["@fake/broken"].reason
    # A misspelled secret is refused by name, its value never shown (it is no known secret key to mask).
    assert reviews["@fake/typo"].status == "refused"
    assert "halo_api_keys is invalid: unknown key (did you mean 'halo_api_key'?)" in reviews["@fake/typo"].reason
    fresh = reviews["@fake/fresh"]
    assert fresh.status == "changes"
    names = [change.name for change in fresh.operations]
    assert "halofleet | kernel | Strix Halo kernel cmdline (GRUB drop-in)" in names
    assert "halofleet | serve | llama-server unit (distro)" in names
    text = to_markdown(list(reviews.values()), inventory, "deploys/full.py")
    assert "Will create /etc/default/grub.d/zz-halofleet.cfg" in text
    assert "+ExecStart=/usr/bin/llama-server --model /srv/models/tiny.gguf" in text
    assert "(content withheld: it holds a secret)" in text
    assert SECRET not in text


def dry_run(inventory: str, *flags: str) -> str:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "pyinfra", *flags, inventory, "deploys/full.py", "--dry", "--diff"],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    return proc.stdout + proc.stderr


def test_pyinfra_dry_diff_lists_every_command_with_the_secret_masked(tmp_path):
    good = {"halo_model": "/srv/models/tiny.gguf", "halo_llama_backend": "cpu", "halo_api_key": SECRET,
            "halo_reboot": "never"}
    inventory = write_inventory(tmp_path, {"fresh": (good, probe_output()),
                                           "broken": ({**good, "halo_rocm_version": "7.0.1"}, probe_output()),
                                           "typo": ({"halo_model": "/srv/models/tiny.gguf", "halo_llama_backend": "cpu",
                                                     "halo_reboot": "never", "halo_apikey": SECRET}, probe_output())})
    # -y skips pyinfra's change detection and with it its diffs: halofleet's listing carries both.
    text = dry_run(inventory, "-y")
    listing = text.split("--> Commands a run would execute (dry run, secrets masked):", 1)[1]
    assert "[@fake/fresh] halofleet | kernel | Strix Halo kernel cmdline (GRUB drop-in)" in listing
    assert "Will create /etc/default/grub.d/zz-halofleet.cfg" in listing
    assert "$ DEBIAN_FRONTEND=noninteractive apt-get" in listing and "systemctl restart halo-serve.service" in listing
    assert "@fake/broken" not in listing  # refused: nothing would run there
    assert "halo_apikey is invalid: unknown key" in text  # the misspelled key is named, its value is not
    assert SECRET not in text


def test_pyinfra_dry_diff_with_change_detection_prints_each_diff_once(tmp_path):
    good = {"halo_model": "/srv/models/tiny.gguf", "halo_llama_backend": "cpu", "halo_reboot": "never"}
    text = dry_run(write_inventory(tmp_path, {"fresh": (good, probe_output())}))
    assert text.count("Will create /etc/default/grub.d/zz-halofleet.cfg") == 1
    assert "$ sh -c 'mkdir -p /etc/default/grub.d" in text.split("--> Commands a run would execute", 1)[1]
