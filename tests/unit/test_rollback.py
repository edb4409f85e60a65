"""deploys/rollback.py through the @fake connector: what it sends, and that it also serves refused hosts."""

from halofleet.contract.paths import GRUB_DROPIN, MODPROBE_FILE, ROCM_PIN
from halofleet.testing.fake import probe_output, run_fake

DATA = {"halo_allow_non_strix_halo": True, "halo_reboot": "never"}
SHA = "0" * 64


def removed(command: str, path: str) -> bool:
    """The rollback's removal of ``path``: a copy kept as a generation first, then the file gone."""
    return (f"cp -p {path} $prev" in command and f"rm -f {path} " in command
            and "/var/backups/halofleet/generations/" in command)


def test_rollback_removes_our_files_even_on_a_host_a_deploy_refuses():
    probe = probe_output(rocm_core="7.0.1.70001-1", files={GRUB_DROPIN: SHA, MODPROBE_FILE: SHA, ROCM_PIN: SHA})
    run = run_fake("deploys/rollback.py", {"h": (DATA, probe)})
    assert run.failed_hosts == set()
    changes = run.changes("h")
    for path in (GRUB_DROPIN, MODPROBE_FILE, ROCM_PIN):
        assert any(removed(c, path) for c in changes), changes
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
        assert any(removed(c, path) for c in changes), path


def test_rollback_puts_the_users_original_back_and_forgets_nothing():
    from halofleet.contract.paths import SERVE_CONF, SERVE_ENV, SERVE_UNIT

    original = "/var/backups/halofleet/original/etc__systemd__system__halo-serve.service"
    files = {SERVE_UNIT: SHA, SERVE_ENV: SHA, SERVE_CONF: SHA}
    backups = ["@record etc__systemd__system__halo-serve.service", "@record etc__halofleet__serve.env.absent",
               "@dir", "@in serve.env", "@in serve.conf"]
    run = run_fake("deploys/rollback.py", {"h": (DATA, probe_output(files=files, sections={"backups": backups}))})
    assert run.failed_hosts == set(), run.errors
    changes = run.changes("h")
    restore = [c for c in changes if f"cp -p {original} " in c]
    assert len(restore) == 1 and f"mv -f {original} {original}.restored" in restore[0], changes
    assert any(f"rm -f {SERVE_ENV} /var/backups/halofleet/original/etc__halofleet__serve.env.absent" in c
               for c in changes)
    assert any(removed(c, SERVE_CONF) for c in changes)  # no record (a release before 0.4): removed, as before
    assert any("rmdir --ignore-fail-on-non-empty /etc/halofleet" in change for change in changes), changes


def test_a_second_rollback_after_a_restore_does_nothing_and_a_users_file_keeps_the_directory():
    from halofleet.contract.paths import SERVE_UNIT

    backups = ["@record etc__systemd__system__halo-serve.service.restored", "@dir", "@in users-notes.txt"]
    run = run_fake("deploys/rollback.py", {"h": (DATA, probe_output(files={SERVE_UNIT: SHA},
                                                                    sections={"backups": backups}))})
    changes = run.changes("h")
    assert not any(SERVE_UNIT in c and "rm -f" in c for c in changes), changes  # the user's own unit stays
    assert not any("rmdir" in c for c in changes)


def test_a_service_user_halofleet_created_goes_with_its_home_and_one_it_did_not_create_as_before():
    accounts = ["root:0:0", "halo:990:990", "@group", "root:0", "halo:990", "video:44", "render:993"]
    created = run_fake("deploys/rollback.py", {"h": (DATA, probe_output(sections={
        "backups": ["@record user__halo.created"], "accounts": accounts}))}).changes("h")
    assert any("userdel --remove halo" in c and "user__halo.created" in c for c in created), created
    before = run_fake("deploys/rollback.py", {"h": (DATA, probe_output(sections={"accounts": accounts}))}).changes("h")
    assert not any("--remove" in c for c in before), before  # pyinfra's server.user, as before
    existed = run_fake("deploys/rollback.py", {"h": (DATA, probe_output(sections={
        "backups": ["@record user__halo.existed"], "accounts": accounts}))})
    assert not any("userdel" in c for c in existed.changes("h")) and not any(
        "groupadd" in c or "useradd" in c for c in existed.changes("h"))
