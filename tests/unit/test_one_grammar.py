"""
One grammar per value (issue 25): every value an operation re-checks goes through the contract (validation and the
plan, in preflight) and through the operation itself, with every value of the corpora; an operation may never
refuse what validation accepted (that refusal would stop pyinfra for every host). For the values whose grammar is
the operation's own (the ROCm repository URL, key URL and suite), the two verdicts are equal.
"""

from __future__ import annotations

import dataclasses

import pytest
from pyinfra.api import Config, OperationError, State
from pyinfra.context import ctx_state

from halofleet.box.plan import build_plan
from halofleet.cli import synthetic_probe
from halofleet.contract.config import ConfigError, HostRefused, option_value
from halofleet.models.files import plan_models
from halofleet.models.hub import resolve_models
from halofleet.models.specs import validate
from halofleet.operations import halo_models, halo_rocm

from .test_bad_inputs import DATA_ERRORS, PUSH_DIR
from .test_hostile import HOSTILE

SHA = "a" * 64
ISSUE_VALUES = [  # issue 25's findings: passed validation, refused by the operation, aborting the fleet
    "https://mirror.example/rocm?x=1", "https://mirror.example/rocm#x", "https://user:tok#en@mirror.example/rocm",
    "https://mirror.example/rocm/?a=b&c=d", "https://mirror.example/ro[c]m", "https://mirror.example/r(o)cm",
    "https://mirror.example/rocm;x", "https://mirror.example/rocm,x", "https://mirror.example/rocm!x",
    "https://mirror.example/rocm*", "https://mirror.example/rocm/$x", "https://mirror.example/r o",
]
GOOD_VALUES = ["https://repo.radeon.com/rocm/apt/7.2.1", "http://10.0.0.5:8080/rocm", "file:/srv/rocm-repo",
               "https://mirror.example/a_b~c+d%20e=f@g-h", "noble", "debian/13", "stable", "/srv/models",
               "/var/lib/halofleet/models", "http://x.test/m.gguf", "https://x.test/d/m-00001-of-00002.gguf",
               "http://x.test/m.gguf?sig=a;b&c=(d)|e", "rocm", "rocm=7.2.1-1", "amdrocm7.14-gfx1151"]


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [item for each in value for item in _strings(each)]
    if isinstance(value, dict):
        return [item for each in value.values() for item in _strings(each)]
    return []


CORPUS = sorted({text for data, _ in DATA_ERRORS for text in _strings(data) if str(PUSH_DIR) not in text}
                | set(HOSTILE) | set(ISSUE_VALUES) | set(GOOD_VALUES)
                | {"a" * 300, "https://x/" + "a" * 3000, "/" + "/".join(["a" * 255] * 17) + "/m"})


def planned(data: dict):
    """
    The host's plan from this data as a deploy makes it (validation, ``halo_models`` resolved, then the plan from
    a Debian 13 box), or None if refused. Only entries that need no lookup are resolved here.
    """
    def no_lookup(url, headers):
        raise AssertionError(f"no Hub lookup expected: {url}")

    try:
        config = validate("h", {"halo_allow_non_strix_halo": True, "halo_serve": "none", **data})
        if config.models:
            specs = resolve_models("h", config.models, config.hf_endpoint, None, config.serve, fetch=no_lookup)
            config = dataclasses.replace(config, values={**config.values, "halo_models": specs})
        return build_plan("h", {}, synthetic_probe(128), config=config)
    except (ConfigError, HostRefused):
        return None


def runs(operation, **kwargs) -> bool:
    """Whether the operation accepts its arguments (every command generated; OperationError is a refusal)."""
    state = State(check_for_changes=False)
    state.config = Config()
    try:
        with ctx_state.use(state):
            list(operation._inner(**kwargs))
    except OperationError:
        return False
    return True


def rocm_operations_accept(rocm) -> bool:
    """Every ROCm operation the rocm stage runs with this plan accepts its arguments."""
    accepted = runs(halo_rocm.repository, url=rocm.url, suite=rocm.suite, key_url=rocm.key_url,
                    path=rocm.sources_path, key_path=rocm.key_path, key_binary=rocm.key_binary, deb822=rocm.deb822,
                    current={})
    if rocm.therock:
        return accepted and runs(halo_rocm.pin, version=rocm.version, packages=rocm.pin_packages,
                                 pin_version=rocm.pin_version, current_sha256=None) \
            and runs(halo_rocm.therock_release, version=rocm.version, packages=rocm.packages, installed={},
                     pin_version=rocm.pin_version)
    return accepted and runs(halo_rocm.pin, version=rocm.version, current_sha256=None) \
        and runs(halo_rocm.release, version=rocm.version, packages=rocm.packages, installed=None)


ROCM_KEYS = [
    ("7.2.1", "halo_rocm_repo_url"), ("7.2.1", "halo_rocm_repo_key_url"), ("7.2.1", "halo_rocm_repo_suite"),
    ("7.2.1", "halo_rocm_packages"), ("7.14.1", "halo_rocm_repo_url"), ("7.14.1", "halo_rocm_packages"),
    (None, "halo_rocm_version"),
]


@pytest.mark.parametrize("version, key", ROCM_KEYS, ids=[f"{v}-{k}" for v, k in ROCM_KEYS])
def test_the_rocm_operations_accept_every_value_the_preflight_accepts(version, key):
    disagreements, accepted = [], 0
    for value in CORPUS:
        data = {key: [value] if key == "halo_rocm_packages" else value}
        if version:
            data["halo_rocm_version"] = version
        plan = planned(data)
        if plan is None or plan.rocm is None:
            continue
        accepted += 1
        if not rocm_operations_accept(plan.rocm):
            disagreements.append(value)
    assert disagreements == []
    assert accepted >= 1  # the corpus holds values the contract accepts, so the comparison is not empty


@pytest.mark.parametrize("key, check, argument", [
    ("halo_rocm_repo_url", lambda value: runs(halo_rocm.repository, url=value, suite="noble", current={}), "url"),
    ("halo_rocm_repo_key_url", lambda value: runs(halo_rocm.repository, url="https://x.test/rocm", suite="noble",
                                                  key_url=value, current={}), "key_url"),
    ("halo_rocm_repo_suite", lambda value: runs(halo_rocm.repository, url="https://x.test/rocm", suite=value,
                                                current={}), "suite"),
])
def test_validation_and_the_repository_operation_share_one_grammar(key, check, argument):
    """The same verdict both ways, for every corpus value: what one refuses the other refuses."""
    verdicts = {}
    for value in CORPUS:
        try:
            option_value("h", key, value)
            valid = True
        except ConfigError:
            valid = False
        verdicts[value] = (valid, check(value))
    differing = {value: verdict for value, verdict in verdicts.items() if verdict[0] != verdict[1]}
    assert differing == {}
    assert any(valid for valid, _ in verdicts.values()) and not all(valid for valid, _ in verdicts.values())


def test_the_issues_urls_are_refused_in_preflight_naming_the_key():
    for value in ISSUE_VALUES:
        with pytest.raises(ConfigError, match="halo_rocm_repo_url="):
            build_plan("h", {"halo_allow_non_strix_halo": True, "halo_serve": "none", "halo_rocm_version": "7.2.1",
                             "halo_rocm_repo_url": value}, synthetic_probe(128))


INCLUDES = ["./m.gguf", "a/./m.gguf", "a/../m.gguf", "m.gguf", "sub/m.gguf", ".m.gguf", "a/.", "."]


@pytest.mark.parametrize("key", ["halo_model_dir", "url", "include"])
def test_model_download_accepts_every_path_and_url_the_preflight_accepts(key):
    disagreements, accepted = [], 0
    for value in CORPUS + INCLUDES:
        entry = {"name": "m", "url": value if key == "url" else "http://x.test/m.gguf", "sha256": SHA}
        if key == "include":  # pinned by name and digest: planned without asking the Hub
            entry = {"name": "m", "hf": "acme/tiny", "include": value, "sha256": SHA}
        data = {"halo_serve": "llama-server", "halo_llama_backend": "cpu", "halo_models": [entry]}
        if key == "halo_model_dir":
            data["halo_model_dir"] = value
        plan = planned(data)
        if plan is None:
            continue
        accepted += 1
        models = plan_models(plan.config, {})
        for action in models.downloads:
            item = action.file
            if not runs(halo_models.model_download, path=item.host_path, url=item.url, owner="halo",
                        sha256=item.sha256, git_oid=item.git_oid):
                disagreements.append(value)
    assert disagreements == []
    assert accepted >= 1
