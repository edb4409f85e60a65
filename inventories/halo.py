"""
Example fleet: replace the host names with your Strix Halo boxes and the model paths with yours.

    halofleet diff inventories/halo.py --out review.md        # review (Markdown for a pull request)
    pyinfra -y inventories/halo.py deploys/full.py             # apply: rolling reboots, one host at a time
    halofleet report inventories/halo.py --html status.html    # what is live

Host data keys are documented in README "Host data" (``halofleet options`` prints them). Group data here applies
to every host of the group; per-host data wins. Keep secrets out of this file: the API key is read from the
environment of the machine running pyinfra.
"""

import os

_api_key = os.environ.get("HALO_API_KEY")  # None: the engines listen on loopback only (halo_bind default)

# Fleet-wide: reboot and restart one host at a time (the smallest batch of the inventory wins).
_fleet = {"ssh_user": "root", "halo_reboot_batch": 1, "halo_restart_batch": 1, "halo_reboot_timeout": 900}

llama = (
    [
        ("halo-01.example.lan", {"halo_os_reserve_gib": 8}),
        ("halo-02.example.lan", {"halo_iommu": "pt"}),  # keeps the XDNA NPU usable
    ],
    {
        **_fleet,
        "halo_serve": "llama-server",
        "halo_llama_source": "distro",  # Debian forky/sid or recent Ubuntu: llama.cpp-tools
        "halo_llama_backend": "vulkan",  # Vulkan RADV: the fastest token generation in kyuz0's measurements
        "halo_model": "/srv/models/gpt-oss-20b-mxfp4.gguf",  # already on each box
        "halo_ctx": 32768,
        "halo_bind": "0.0.0.0" if _api_key else "127.0.0.1",
        "halo_api_key": _api_key,
    },
)

vllm = (
    [
        ("halo-03.example.lan", {}),
    ],
    {
        **_fleet,
        "halo_serve": "vllm",
        "halo_cwsr_policy": "enforce",  # vLLM on ROCm needs the CWSR kernel fix
        "halo_rocm_version": "none",  # the vLLM toolbox image carries its own ROCm
        "halo_model": "Qwen/Qwen3-8B",  # fetched by vLLM into /var/lib/halofleet/cache
        "halo_vllm_gpu_memory_utilization": 0.85,
        "halo_ctx": 16384,
        "halo_api_key": _api_key,
    },
)
