"""
Example fleet: replace the host names with your Strix Halo boxes.

    pyinfra inventories/halo.py deploys/full.py --dry --diff   # review
    pyinfra -y inventories/halo.py deploys/full.py             # apply

Host data keys are documented in README "Host data" (``halofleet options`` prints them). Group data here applies
to every host of the group; per-host data wins.
"""

llama = (
    [
        ("halo-01.example.lan", {"halo_os_reserve_gib": 8}),
        ("halo-02.example.lan", {"halo_iommu": "pt"}),  # keeps the XDNA NPU usable
    ],
    {"halo_serve": "llama-server", "halo_runtime": "podman", "ssh_user": "root"},
)

vllm = (
    [
        ("halo-03.example.lan", {}),
    ],
    {
        "halo_serve": "vllm",
        "halo_cwsr_policy": "enforce",  # vLLM on ROCm needs the CWSR kernel fix
        "halo_rocm_version": "none",  # the vLLM toolbox image carries its own ROCm
        "ssh_user": "root",
    },
)
