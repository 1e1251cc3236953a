"""``hotpatch demo``: fix CVE-2024-53861 in a running PyJWT service under load, without a restart.

``service`` is the small JWT-protected HTTP service the demonstration starts
(``python -m pyhotpatch.demo.service``); ``story`` tells the story step by step.
"""

ISSUER = "urn:acme:auth"  # the issuer the service expects in every token
SECRET_ENV = "PYHOTPATCH_DEMO_SECRET"  # environment variable holding the service's HS256 key
