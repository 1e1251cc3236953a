"""The orchestrator: automatic assessment and availability-first rollouts of releases."""
