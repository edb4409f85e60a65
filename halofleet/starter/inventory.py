"""
Your Strix Halo fleet (written by `halofleet init`): replace the host names with your boxes. pyinfra reads the
group data of each group from group_data/<group>.py next to this file; per-host data (the dicts below) wins.

    halofleet diff inventory.py --out review.md        # review every change
    pyinfra -y inventory.py deploy.py                   # apply: rolling reboots, one host at a time
    halofleet verify inventory.py                       # what is live
"""

llama = [
    ("halo-01.example.lan", {"halo_os_reserve_gib": 8}),
    ("halo-02.example.lan", {"halo_iommu": "pt"}),  # iommu=pt keeps the XDNA NPU usable
]

vllm = [
    ("halo-03.example.lan", {}),
]
