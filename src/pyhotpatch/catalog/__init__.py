"""The release catalog: products, baselines and hotpatches, their calendar, signed delivery.

A control plane keeps one ``Catalog``. Publishing enforces the rhythm of the seed
system (planned baselines quarterly, cumulative hotpatches on the current baseline
in between, unplanned baselines when a fix cannot be hotpatched) and signs every
artifact as a TUF target; node agents fetch them through ``tufclient.ReleaseFeed``.
"""

from __future__ import annotations

from pyhotpatch.catalog._calendar import (
    DEFAULT_BASELINE_MONTHS,
    MonthEntry,
    calendar,
    next_baseline_release,
    patch_tuesday,
)
from pyhotpatch.catalog._catalog import (
    ArtifactRef,
    Catalog,
    PublishRequest,
    default_data_dir,
)
from pyhotpatch.catalog._lock import Pin, parse_lock
from pyhotpatch.catalog._model import (
    SECURITY_CLASSIFICATIONS,
    Artifact,
    Image,
    Kind,
    Product,
    Release,
)
from pyhotpatch.catalog._products import DEFAULT_PRODUCTS
from pyhotpatch.catalog._svg import render_svg
from pyhotpatch.catalog._tuf_repo import SigningRepository, TufSettings, target_path
from pyhotpatch.package import CLASSIFICATIONS

__all__ = [
    "CLASSIFICATIONS",
    "DEFAULT_BASELINE_MONTHS",
    "DEFAULT_PRODUCTS",
    "SECURITY_CLASSIFICATIONS",
    "Artifact",
    "ArtifactRef",
    "Catalog",
    "Image",
    "Kind",
    "MonthEntry",
    "Pin",
    "Product",
    "PublishRequest",
    "Release",
    "SigningRepository",
    "TufSettings",
    "calendar",
    "default_data_dir",
    "next_baseline_release",
    "parse_lock",
    "patch_tuesday",
    "render_svg",
    "target_path",
]
