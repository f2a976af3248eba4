"""One exception hierarchy; every message is written for the person at the terminal."""

from __future__ import annotations


class OpsError(Exception):
    """Root of every error the product raises on purpose."""

    #: CLI exit code for this kind of error (2 = bad input, 1 = operation failed).
    exit_code = 1


class BadInput(OpsError):
    """The user gave us something we cannot accept; the message names the field at fault."""

    exit_code = 2


class PlanError(BadInput):
    """A plan file is unreadable or invalid."""


class TargetResolutionError(BadInput):
    """A target selector matched nothing, or matched something we cannot run on."""


class NotFound(OpsError):
    """The thing asked for does not exist (or is not visible to this tenant)."""

    exit_code = 2


class IllegalTransition(OpsError):
    """A status change the status machine forbids."""


class StaleStatus(OpsError):
    """A compare-and-set lost: somebody else changed the status first."""


class DatabaseError(OpsError):
    """PostgreSQL failed or cannot be reached; wraps driver errors once, at the boundary."""


class EmbeddedServerError(DatabaseError):
    """The embedded PostgreSQL server could not be initialised or started."""


class Unauthenticated(OpsError):
    """No credentials, or credentials we do not recognise (HTTP 401)."""

    exit_code = 2


class PermissionDenied(OpsError):
    """RBAC denied the request: the actor's roles do not grant it (HTTP 403)."""

    exit_code = 2


class Conflict(OpsError):
    """The request contradicts the current state, e.g. cancelling a finished execution."""


class SecretError(OpsError):
    """A secret could not be resolved, stored or decrypted; the message names the path."""


class SourceError(OpsError):
    """An inventory source could not be read (its API answered wrongly, ``ansible-inventory``
    failed); the message says which source and why (HTTP 502)."""


class LeaseLost(OpsError):
    """A worker's lease on a queued execution expired or was taken over; its writes are refused."""


class RecordError(OpsError):
    """A stored row does not fit its record: a column missing, or a value of a closed set
    (status, mode, ...) this version does not know, e.g. written by a newer one."""
