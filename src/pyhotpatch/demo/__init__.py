"""``hotpatch demo``: the demonstrations, and the demo stack they patch.

``fleet`` runs the main one: the control plane, six real agents and the orchestrator on
an accelerated clock (``machines`` and ``releases`` hold its fleet and its releases).
``story`` runs ``hotpatch demo --engine``: CVE-2024-53861 fixed in one running PyJWT
service (``service``), with no control plane. ``stack`` and ``worker`` are the demo web
app's releases and the worker that serves it.
"""

ISSUER = "urn:acme:auth"  # the issuer the service expects in every token
SECRET_ENV = "PYHOTPATCH_DEMO_SECRET"  # environment variable holding the service's HS256 key
