"""The products a new catalog knows: the project's demo images and Azure's hotpatch SKUs.

Azure's Windows Server Azure Edition SKUs are listed so that existing Azure
templates and scripts, which name those images, validate unchanged; each Windows
Server version is one product, because its SKUs share one release line.
"""

from __future__ import annotations

from pyhotpatch.catalog._model import Image, Product

_WINDOWS = ("MicrosoftWindowsServer", "WindowsServer")

DEMO = "pyhotpatch-demo"
DEMO_LEGACY = "pyhotpatch-demo-legacy"

DEFAULT_PRODUCTS: tuple[Product, ...] = (
    Product(
        name=DEMO,
        title="pyhotpatch demo service stack (CPython web service)",
        images=(
            Image("pyhotpatch", "python-service", "demo-hotpatch"),
            Image("pyhotpatch", "python-service", "demo-hotpatch-small"),
        ),
    ),
    Product(
        name=DEMO_LEGACY,
        title="pyhotpatch demo service stack, before hotpatch support",
        images=(Image("pyhotpatch", "python-service", "demo-legacy"),),
        hotpatch=False,
        upgrade_to=DEMO,
    ),
    Product(
        name="windows-server-2022-azure-edition",
        title="Windows Server 2022 Datacenter: Azure Edition",
        images=tuple(
            Image(*_WINDOWS, sku)
            for sku in (
                "2022-datacenter-azure-edition-core",
                "2022-datacenter-azure-edition-core-smalldisk",
                "2022-datacenter-azure-edition-hotpatch",
                "2022-datacenter-azure-edition-hotpatch-smalldisk",
            )
        ),
    ),
    Product(
        name="windows-server-2025-azure-edition",
        title="Windows Server 2025 Datacenter: Azure Edition",
        images=tuple(
            Image(*_WINDOWS, sku)
            for sku in (
                "2025-datacenter-azure-edition",
                "2025-datacenter-azure-edition-smalldisk",
                "2025-datacenter-azure-edition-core",
                "2025-datacenter-azure-edition-core-smalldisk",
            )
        ),
    ),
)
