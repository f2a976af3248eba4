"""Connectors: how a step reaches a target: a local process in a sandbox, SSH, HTTP, SQL."""
