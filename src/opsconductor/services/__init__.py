"""The use cases, in one place: every entry point (REST API, CLI, console) calls these.

Each function takes a :class:`~opsconductor.services.caller.Caller`, the identity proven by a
credential (an API token, or the operating system's own user for the local administrator),
and checks that caller's permission once, here. The adapters only parse input, build the
caller and render what comes back. See ``docs/security.md``.
"""
