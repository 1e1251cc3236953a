"""The ``hotpatch`` command line."""

from pyhotpatch.cli import _server, _simulate  # noqa: F401  (register their commands)
from pyhotpatch.cli._agent import agent_app
from pyhotpatch.cli._app import app, main
from pyhotpatch.cli._login import account_app
from pyhotpatch.cli._registration import feature_app, provider_app
from pyhotpatch.cli._release import release_app
from pyhotpatch.cli._rollout import compliance_app, rollout_app
from pyhotpatch.cli._tokens import token_app
from pyhotpatch.cli._vm import group_app, vm_app

for _group in (
    release_app,
    token_app,
    agent_app,
    account_app,
    feature_app,
    provider_app,
    group_app,
    vm_app,
    rollout_app,
    compliance_app,
):
    app.add_typer(_group)

__all__ = ["app", "main"]
