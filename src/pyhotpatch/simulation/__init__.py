"""Simulated fleets on a virtual clock: the orchestrator's proving ground."""
