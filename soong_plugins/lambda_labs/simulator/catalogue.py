"""What the simulated cloud sells: regions, instance types, images, default capacity.

Modelled on Lambda Cloud's public catalogue (names, GPU descriptions, specs and prices
in US cents per hour as the real ``/instance-types`` reports them), so a user of the
simulator sees the choices and the costs they would see for real. Every region name is
one of the spec's ``PublicRegionCode`` values, or responses would not validate.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from soong_plugins.lambda_labs import bundled

SIMULATED_REGIONS = ("us-east-1", "us-east-3", "us-west-1", "us-west-2", "us-west-3",
                     "us-south-1", "us-south-2", "us-midwest-1", "europe-central-1",
                     "asia-northeast-1", "asia-south-1", "me-west-1")
REGIONS: dict[str, str] = {name: bundled.REGIONS[name] for name in SIMULATED_REGIONS}
"""Region name -> description (the provider's own table, so both agree), in the order
the API lists them."""


@dataclass(frozen=True)
class TypeSpec:
    """One instance type of the catalogue and the regions that offer it."""

    name: str
    description: str
    gpu_description: str
    price_cents_per_hour: int
    gpus: int
    vcpus: int
    memory_gib: int
    storage_gib: int
    regions: tuple[str, ...]

    def to_api(self) -> dict[str, object]:
        """The spec's ``InstanceType`` object."""
        return {
            "name": self.name,
            "description": self.description,
            "gpu_description": self.gpu_description,
            "price_cents_per_hour": self.price_cents_per_hour,
            "specs": {"vcpus": self.vcpus, "memory_gib": self.memory_gib,
                      "storage_gib": self.storage_gib, "gpus": self.gpus},
        }


_US = ("us-east-1", "us-west-1", "us-west-2", "us-west-3", "us-south-1", "us-midwest-1")
_WIDE = (*_US, "europe-central-1", "asia-northeast-1", "asia-south-1")

INSTANCE_TYPES: tuple[TypeSpec, ...] = (
    TypeSpec("gpu_1x_a10", "1x A10 (24 GB PCIe)", "A10 (24 GB PCIe)", 75,
             1, 30, 200, 1400, ("us-east-1", "us-west-1", "us-west-2", "us-south-1",
                                "europe-central-1", "asia-northeast-1", "asia-south-1")),
    TypeSpec("gpu_1x_rtx6000", "1x RTX 6000 (24 GB)", "RTX 6000 (24 GB)", 50,
             1, 14, 46, 512, ("us-west-1", "us-south-1")),
    TypeSpec("gpu_1x_a6000", "1x A6000 (48 GB)", "A6000 (48 GB)", 80,
             1, 14, 100, 512, ("us-east-1", "us-west-1", "us-south-1", "europe-central-1")),
    TypeSpec("gpu_2x_a6000", "2x A6000 (48 GB)", "A6000 (48 GB)", 160,
             2, 28, 200, 1024, ("us-west-1", "us-south-1")),
    TypeSpec("gpu_4x_a6000", "4x A6000 (48 GB)", "A6000 (48 GB)", 320,
             4, 56, 400, 1024, ("us-west-1", "us-south-1")),
    TypeSpec("gpu_1x_a100", "1x A100 (40 GB PCIe)", "A100 (40 GB PCIe)", 129,
             1, 30, 200, 512, ("us-east-1", "us-west-2", "us-south-1")),
    TypeSpec("gpu_1x_a100_sxm4", "1x A100 (40 GB SXM4)", "A100 (40 GB SXM4)", 129,
             1, 30, 200, 512, ("us-east-1", "us-west-2", "us-midwest-1", "asia-south-1")),
    TypeSpec("gpu_8x_a100", "8x A100 (40 GB SXM4)", "A100 (40 GB SXM4)", 1032,
             8, 124, 1800, 5938, ("us-east-1", "us-west-2", "us-midwest-1")),
    TypeSpec("gpu_8x_a100_80gb_sxm4", "8x A100 (80 GB SXM4)", "A100 (80 GB SXM4)", 1432,
             8, 240, 1800, 20000, ("us-east-1", "us-west-3", "us-midwest-1",
                                   "europe-central-1")),
    TypeSpec("gpu_1x_h100_pcie", "1x H100 (80 GB PCIe)", "H100 (80 GB PCIe)", 249,
             1, 26, 200, 1024, ("us-west-1", "us-west-3", "us-south-1", "us-east-3")),
    TypeSpec("gpu_1x_h100_sxm5", "1x H100 (80 GB SXM5)", "H100 (80 GB SXM5)", 329,
             1, 26, 225, 2816, _US),
    TypeSpec("gpu_2x_h100_sxm5", "2x H100 (80 GB SXM5)", "H100 (80 GB SXM5)", 638,
             2, 52, 450, 5632, ("us-east-1", "us-west-3", "us-south-2")),
    TypeSpec("gpu_8x_h100_sxm5", "8x H100 (80 GB SXM5)", "H100 (80 GB SXM5)", 2392,
             8, 208, 1800, 22528, ("us-east-1", "us-west-3", "us-south-2", "us-midwest-1",
                                   "me-west-1")),
    TypeSpec("gpu_1x_gh200", "1x GH200 (96 GB)", "GH200 (96 GB)", 149,
             1, 64, 432, 4096, ("us-east-1", "us-west-1", "us-east-3")),
    TypeSpec("gpu_8x_v100", "8x Tesla V100 (16 GB)", "Tesla V100 (16 GB)", 440,
             8, 88, 448, 5938, ("us-south-1", "asia-northeast-1")),
    TypeSpec("gpu_1x_b200_sxm6", "1x B200 (180 GB SXM6)", "B200 (180 GB SXM6)", 499,
             1, 26, 362, 2816, ("us-east-3", "us-south-2")),
    TypeSpec("gpu_8x_b200_sxm6", "8x B200 (180 GB SXM6)", "B200 (180 GB SXM6)", 3992,
             8, 208, 2900, 22528, ("us-east-3", "us-south-2", "us-midwest-1")),
)

TYPES_BY_NAME: dict[str, TypeSpec] = {spec.name: spec for spec in INSTANCE_TYPES}

DEFAULT_CAPACITY = 20
"""Instances of one type that fit in one region offering it, unless a knob says otherwise."""


@dataclass(frozen=True)
class ImageSpec:
    family: str
    name: str
    version: str
    description: str
    architecture: str = "x86_64"


IMAGE_FAMILIES: tuple[ImageSpec, ...] = (
    ImageSpec("lambda-stack-24-04", "lambda-stack-24.04", "24.04.2",
              "Lambda Stack on Ubuntu 24.04 LTS (the default image)"),
    ImageSpec("lambda-stack-22-04", "lambda-stack-22.04", "22.04.5",
              "Lambda Stack on Ubuntu 22.04 LTS"),
    ImageSpec("ubuntu-24-04", "ubuntu-24.04", "24.04.2", "Ubuntu 24.04 LTS, no drivers"),
    ImageSpec("ubuntu-22-04", "ubuntu-22.04", "22.04.5", "Ubuntu 22.04 LTS, no drivers"),
    ImageSpec("lambda-stack-24-04-arm", "lambda-stack-24.04-arm64", "24.04.2",
              "Lambda Stack on Ubuntu 24.04 LTS for GH200 (arm64)", "arm64"),
)

IMAGE_CREATED = "2025-01-15T00:00:00+00:00"
IMAGE_UPDATED = "2025-06-01T00:00:00+00:00"


def image_id(family: str, region: str) -> str:
    """A stable id per (family, region): the same across restarts and simulators."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"soong-sim:image:{family}:{region}"))


def images() -> list[dict[str, object]]:
    """The spec's ``Image`` objects: every family in every region."""
    return [
        {"id": image_id(image.family, region), "created_time": IMAGE_CREATED,
         "updated_time": IMAGE_UPDATED, "name": image.name,
         "description": image.description, "family": image.family,
         "version": image.version, "architecture": image.architecture,
         "region": region_api(region)}
        for region in REGIONS for image in IMAGE_FAMILIES
    ]


def region_api(name: str) -> dict[str, str]:
    """The spec's ``Region`` object."""
    return {"name": name, "description": REGIONS[name]}
