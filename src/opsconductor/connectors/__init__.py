"""Connectors: how a step reaches a target (local process today; SSH, HTTP, SQL later)."""
