"""deploys/rollback.py through the @fake connector: what it sends, and that it also serves refused hosts."""

from halofleet.contract.paths import GRUB_DROPIN, MODPROBE_FILE, ROCM_PIN
from halofleet.testing.fake import probe_output, run_fake

DATA = {"halo_allow_non_strix_halo": True, "halo_reboot": "never"}
SHA = "0" * 64


def test_rollback_removes_our_files_even_on_a_host_a_deploy_refuses():
    probe = probe_output(rocm_core="7.0.1.70001-1", files={GRUB_DROPIN: SHA, MODPROBE_FILE: SHA, ROCM_PIN: SHA})
    run = run_fake("deploys/rollback.py", {"h": (DATA, probe)})
    assert run.failed_hosts == set()
    changes = run.changes("h")
    for path in (GRUB_DROPIN, MODPROBE_FILE, ROCM_PIN):
        assert any(c.startswith("mv -f " + path + " /var/backups/halofleet/") for c in changes), changes
    assert any("update-grub" in c for c in changes)
    assert any("update-initramfs" in c for c in changes)


def test_rollback_of_a_clean_host_touches_no_file():
    run = run_fake("deploys/rollback.py", {"h": (DATA, probe_output())})
    assert not any(c.startswith(("mv ", "update-grub")) or "update-grub" in c for c in run.changes("h"))


def test_rollback_refuses_bad_data_before_any_command():
    run = run_fake("deploys/rollback.py", {"h": ({**DATA, "halo_service_user": "root"}, probe_output())})
    assert run.failed_hosts == {"h"} and run.commands["h"] == []


def test_rollback_removes_every_rocm_file_of_both_streams():
    from halofleet.contract.paths import ROCM_PIN, ROCM_REPO_FILES

    files = dict.fromkeys((*ROCM_REPO_FILES, ROCM_PIN), SHA)
    run = run_fake("deploys/rollback.py", {"h": (DATA, probe_output(files=files))})
    changes = run.changes("h")
    for path in files:
        assert any(c.startswith("mv -f " + path + " /var/backups/halofleet/") for c in changes), path
