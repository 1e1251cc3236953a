"""Seeded generator of base modules, hotpatchable edits and refused edits (differential tests)."""
