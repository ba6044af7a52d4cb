"""What soong knows about Lambda Cloud without asking: its regions and a price list.

The regions are the spec's ``PublicRegionCode`` values (version 1.8.3): every region
code the API accepts, so ``start --region`` can tell a typo from a region that is merely
full without a request. The price list is a snapshot of Lambda's public catalogue,
used only when the pricing call fails and no catalogue was ever cached for the
endpoint, and then marked as such: estimates keep working, nobody mistakes them for
live prices, and no capacity is claimed.

Standard library only.
"""

from __future__ import annotations

from typing import Any

REGIONS: dict[str, str] = {
    "us-east-1": "Virginia, USA",
    "us-east-2": "",
    "us-east-3": "Washington DC, USA",
    "us-west-1": "California, USA",
    "us-west-2": "Arizona, USA",
    "us-west-3": "Utah, USA",
    "us-south-1": "Texas, USA",
    "us-south-2": "North Texas, USA",
    "us-south-3": "",
    "us-midwest-1": "Illinois, USA",
    "us-midwest-2": "",
    "europe-central-1": "Germany",
    "asia-northeast-1": "Tokyo, Japan",
    "asia-northeast-2": "",
    "asia-south-1": "Bangalore, India",
    "australia-east-1": "",
    "me-west-1": "Israel",
}
"""Region code -> where it is (empty where the spec lists a code and soong has not
seen its description). Live answers (``regions_with_capacity_available``) carry
descriptions too and win over these."""

PRICES_AS_OF = "2025-06"
"""When the snapshot below was taken."""

_TYPES: tuple[tuple[str, str, int, int, int, int, int], ...] = (
    # name, GPU, price (US cents per hour), GPUs, vCPUs, memory GiB, storage GiB
    ("gpu_1x_a10", "A10 (24 GB PCIe)", 75, 1, 30, 200, 1400),
    ("gpu_1x_rtx6000", "RTX 6000 (24 GB)", 50, 1, 14, 46, 512),
    ("gpu_1x_a6000", "A6000 (48 GB)", 80, 1, 14, 100, 512),
    ("gpu_2x_a6000", "A6000 (48 GB)", 160, 2, 28, 200, 1024),
    ("gpu_4x_a6000", "A6000 (48 GB)", 320, 4, 56, 400, 1024),
    ("gpu_1x_a100", "A100 (40 GB PCIe)", 129, 1, 30, 200, 512),
    ("gpu_1x_a100_sxm4", "A100 (40 GB SXM4)", 129, 1, 30, 200, 512),
    ("gpu_8x_a100", "A100 (40 GB SXM4)", 1032, 8, 124, 1800, 5938),
    ("gpu_8x_a100_80gb_sxm4", "A100 (80 GB SXM4)", 1432, 8, 240, 1800, 20000),
    ("gpu_1x_h100_pcie", "H100 (80 GB PCIe)", 249, 1, 26, 200, 1024),
    ("gpu_1x_h100_sxm5", "H100 (80 GB SXM5)", 329, 1, 26, 225, 2816),
    ("gpu_2x_h100_sxm5", "H100 (80 GB SXM5)", 638, 2, 52, 450, 5632),
    ("gpu_8x_h100_sxm5", "H100 (80 GB SXM5)", 2392, 8, 208, 1800, 22528),
    ("gpu_1x_gh200", "GH200 (96 GB)", 149, 1, 64, 432, 4096),
    ("gpu_8x_v100", "Tesla V100 (16 GB)", 440, 8, 88, 448, 5938),
    ("gpu_1x_b200_sxm6", "B200 (180 GB SXM6)", 499, 1, 26, 362, 2816),
    ("gpu_8x_b200_sxm6", "B200 (180 GB SXM6)", 3992, 8, 208, 2900, 22528),
)


def instance_types_payload() -> dict[str, Any]:
    """The snapshot in the shape of ``GET /instance-types``'s ``data``, no capacity, so
    it goes through the same parsing as a live answer."""
    return {
        name: {"instance_type": {"name": name, "description": f"{gpus}x {gpu}",
                                 "gpu_description": gpu, "price_cents_per_hour": price,
                                 "specs": {"gpus": gpus, "vcpus": vcpus,
                                           "memory_gib": memory, "storage_gib": storage}},
               "regions_with_capacity_available": []}
        for name, gpu, price, gpus, vcpus, memory, storage in _TYPES
    }
