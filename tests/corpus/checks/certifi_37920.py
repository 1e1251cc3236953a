"""CVE-2023-37920 (certifi 2023.5.7 -> 2023.7.22): the distrusted e-Tugra roots are still trusted.

e-Tugra's root certificates were removed from Mozilla's store after security problems at the CA;
certifi 2023.7.22 drops them from ``cacert.pem``. The fix is data only, so it cannot reach what a
process already loaded: an ``SSLContext`` built from the bundle at start-up keeps trusting the
roots. The check looks for e-Tugra roots in the bundle at ``certifi.where()`` and in the CA list
of an ``SSLContext`` built from it in ``prepare()`` (which is why this release is not
hotpatchable: after swapping the file the prepared context still shows the bug).
"""

from __future__ import annotations

import ssl

import certifi


def _etugra_in_context(context: ssl.SSLContext) -> bool:
    return any("E-Tugra" in str(cert.get("subject")) for cert in context.get_ca_certs())


def prepare() -> object:
    return ssl.create_default_context(cafile=certifi.where())


def exploited(ctx: object) -> bool:
    assert isinstance(ctx, ssl.SSLContext)
    with open(certifi.where(), encoding="utf-8") as f:
        bundle = f.read()
    if "BEGIN CERTIFICATE" not in bundle:
        raise RuntimeError("empty CA bundle")
    return "E-Tugra" in bundle or _etugra_in_context(ctx)
