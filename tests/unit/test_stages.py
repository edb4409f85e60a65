"""The packaged @deploy stages: a fleet whose hosts take different stages deploys in one run."""

from halofleet.testing.fake import probe_output, run_fake

SERVES = {"halo_allow_non_strix_halo": True, "halo_reboot": "never", "halo_model": "/srv/models/tiny.gguf",
          "halo_llama_backend": "cpu"}
PINS_ROCM = {**SERVES, "halo_rocm_version": "7.2.1", "halo_serve": "none"}
PREPARES_ONLY = {"halo_allow_non_strix_halo": True, "halo_reboot": "never", "halo_serve": "none"}


def test_hosts_choosing_different_stages_deploy_in_one_run():
    # Before the stages were functions called on lines of their own, this fleet aborted with "Cycle detected in
    # operation ordering DAG" and no host got any operation.
    run = run_fake("deploys/full.py", {"rocm": (PINS_ROCM, probe_output()), "serve": (SERVES, probe_output()),
                                       "bare": (PREPARES_ONLY, probe_output()),
                                       "both": ({**SERVES, "halo_rocm_version": "7.2.1"}, probe_output())})
    assert run.errors == [] and run.failed_hosts == set()
    both = " ".join(run.changes("both"))
    assert "not 7.2.1" in both and "llama.cpp-tools" in both
    rocm, serve, bare = (" ".join(run.changes(name)) for name in ("rocm", "serve", "bare"))
    assert "apt-get install" in rocm and "not 7.2.1" in rocm and "llama.cpp-tools" not in rocm
    assert "llama.cpp-tools" in serve and "halofleet-rocm" not in serve
    assert "llama.cpp-tools" not in bare and "halofleet-rocm" not in bare and "zz-halofleet.cfg" in bare


def test_stage_files_and_functions_give_the_same_commands():
    # deploys/kernel.py is a thin file calling halofleet.stages.kernel: what a user's own deploy file gets too.
    full = run_fake("deploys/full.py", {"h": (PREPARES_ONLY, probe_output())}).changes("h")
    kernel = run_fake("deploys/kernel.py", {"h": (PREPARES_ONLY, probe_output())}).changes("h")
    assert kernel and all(command in full for command in kernel)
