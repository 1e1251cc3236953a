"""The part of Azure Resource Manager that hotpatch touches, served as Azure serves it.

Features, provider registration, resource groups, availability sets and virtual machines
with their patch settings, patch status and the ``assessPatches``/``installPatches``
long-running operations: same paths, bodies, enums, status codes and headers, so the real
Azure SDK for Python and ``az``-style scripts work against ``hotpatch server`` unchanged.
"""
