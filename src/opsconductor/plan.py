"""The plan: what a caller asks us to run (README, "Plans"). Pure: no I/O beyond parsing text.

Strict pydantic models: unknown keys and wrong types are errors, and every error is reported
as ``path: message`` (``steps[2].timeout_s: must be > 0``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from opsconductor import linear_regex, plan_errors, rollout, safe_parse
from opsconductor.errors import PlanError
from opsconductor.params import ParamSpec, check_names
from opsconductor.plan_secrets import SecretRef as SecretRef
from opsconductor.plan_secrets import SecretText as SecretText
from opsconductor.plan_secrets import StrOrSecret as StrOrSecret
from opsconductor.plan_secrets import fill_secrets as fill_secrets
from opsconductor.plan_secrets import secret_refs as secret_refs

ActionClass = Literal["read", "modify", "deploy"]


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Targets(_Strict):
    """Selectors are combined with AND; an asset matches when it satisfies every one given."""

    assets: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1)
    hostnames: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1)
    tags: dict[str, str] | None = Field(default=None, min_length=1)
    environment: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _not_empty(self) -> Targets:
        if not any((self.assets, self.hostnames, self.tags, self.environment)):
            raise ValueError("give at least one of assets, hostnames, tags, environment")
        return self


class _StepBase(_Strict):
    name: str = Field(min_length=1, max_length=200)
    #: What the author wrote; None when the plan does not say. Read ``action_class``, which
    #: infers a missing class from the step (see ``inferred_action_class``). Kept apart so
    #: the plan document (and its hash) holds only what the author set.
    declared_action_class: ActionClass | None = Field(default=None, alias="action_class")
    timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    retries: int = Field(default=0, ge=0, le=10)
    idempotent: bool | None = None
    #: How many targets of this step run at once; None means DEFAULT_CONCURRENCY. Left
    #: None rather than defaulted so plans that do not set it keep their plan hash.
    concurrency: int | None = Field(default=None, ge=1, le=1000)
    #: A condition per target (``params.restart and asset.tags.role == 'web'``): false ->
    #: the step is ``skipped`` there, with the reason recorded (templating.condition).
    when: str | None = Field(default=None, min_length=1, max_length=4000)

    @field_validator("timeout_s", mode="before")
    @classmethod
    def _int_is_fine(cls, value: Any) -> Any:
        # YAML ``timeout_s: 5`` is an int; strict mode would refuse it as a float.
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @property
    def action_class(self) -> ActionClass:
        """The class RBAC, timeouts and crash re-runs go by: declared, else inferred."""
        return self.declared_action_class or self.inferred_action_class()

    @property
    def action_class_inferred(self) -> bool:
        return self.declared_action_class is None

    def inferred_action_class(self) -> ActionClass:
        """Safe default for a step that does not say: it may change its targets. Step types
        that cannot change anything override this."""
        return "modify"

    @property
    def is_idempotent(self) -> bool:
        return self.idempotent if self.idempotent is not None else self.action_class == "read"


def _check_env_names(env: dict[str, StrOrSecret]) -> dict[str, StrOrSecret]:
    for key in env:
        if not _ENV_NAME.match(key):
            raise ValueError(f"{key!r} is not a valid environment variable name")
    return env


def _check_regex(pattern: str | None) -> str | None:
    if pattern is not None:
        problem = linear_regex.compile_error(pattern)
        if problem is not None:
            raise ValueError(
                f"not a valid regular expression for RE2 (linear time: no backreferences "
                f"or lookaround): {problem}"
            )
    return pattern


class _Escalating(_StepBase):
    """``become``: run the command or script as another user (``become_user``, default
    root) through ``sudo`` on an SSH target. The password, if sudo asks for one, is a secret
    reference: resolved just in time, masked, and written to sudo's stdin, never put on a
    command line or in the environment (``connectors/ssh_run.py``). Local steps refuse it:
    their sandbox runs with no_new_privs, where sudo cannot work (``inventory``)."""

    become: bool = False
    become_user: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
    )
    become_password: StrOrSecret | None = None

    @field_validator("become_password")
    @classmethod
    def _password_by_reference(cls, value: StrOrSecret | None) -> StrOrSecret | None:
        if isinstance(value, str):
            raise ValueError('must be a secret reference, e.g. {secret: "kv/sudo/web"}')
        return value

    @model_validator(mode="after")
    def _become_set(self) -> _Escalating:
        if not self.become and (self.become_user is not None or self.become_password is not None):
            raise ValueError("become_user and become_password need become: true")
        return self

    @property
    def become_as(self) -> str | None:
        """The user the step runs as through sudo, or None (the connection's own user)."""
        return (self.become_user or "root") if self.become else None


class CommandStep(_Escalating):
    type: Literal["command"]
    targets: Targets
    command: str = Field(min_length=1)
    env: dict[str, StrOrSecret] = Field(default_factory=dict)
    cwd: str | None = None

    _env_names = field_validator("env")(_check_env_names)


class ScriptStep(_Escalating):
    """A script uploaded to each target, run there by ``interpreter``, then removed."""

    type: Literal["script"]
    targets: Targets
    script: str = Field(min_length=1)
    interpreter: str = Field(default="/bin/sh", min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, StrOrSecret] = Field(default_factory=dict)
    cwd: str | None = None

    _env_names = field_validator("env")(_check_env_names)


#: A value of an ansible step's ``extra_vars``: strings are templates (``{{ params.x }}``).
ExtraVar = str | int | float | bool | None | SecretRef


class AnsibleStep(_Escalating):
    """An Ansible playbook, run ONCE for all the step's targets by ``ansible-playbook`` on
    this machine, sandboxed (``connectors/ansible_run.py``); each target's attempt is that
    host's result. ``playbook`` is a path in the tenant's files root, relative to it: the
    playbook and the files of its folder are digested at submission (``playbook_files``).
    ``extra_vars`` values may be templates over ``params`` (no ``asset``: one run serves
    every target) or secret references. ``become`` applies to every task (``-b``)."""

    type: Literal["ansible"]
    targets: Targets
    playbook: str = Field(min_length=1, max_length=500)
    extra_vars: dict[str, ExtraVar] = Field(default_factory=dict, max_length=200)
    tags: list[Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[\w.-]+$")]] = Field(
        default_factory=list, max_length=50
    )

    @field_validator("extra_vars")
    @classmethod
    def _var_names(cls, extra: dict[str, ExtraVar]) -> dict[str, ExtraVar]:
        for key in _check_env_names(extra):  # type: ignore[arg-type]
            if key.startswith(("ansible_", "opsc_")):
                # Connection settings (host, key, host key checking) come from the assets.
                raise ValueError(f"{key!r}: ansible_* and opsc_* variables are set by OpsConductor")
        return extra

    @field_validator("playbook")
    @classmethod
    def _in_files_root(cls, playbook: str) -> str:
        if playbook.startswith("/") or ".." in Path(playbook).parts or "\x00" in playbook:
            raise ValueError("a path relative to the tenant's files root, without '..'")
        if not playbook.endswith((".yml", ".yaml")):
            raise ValueError("a playbook is a .yml or .yaml file")
        return playbook


class FileStep(_StepBase):
    """Copy a file to each target (``push``, the default) or from each target (``fetch``).

    Push: ``src`` is a file in the tenant's files root here, ``dest`` an absolute path on
    the target. Fetch: ``src`` is an absolute path on the target, ``dest`` a path in the
    tenant's files root that must name the target (a template such as
    ``logs/{{ asset.id }}.log``) so targets do not overwrite each other
    (``connectors/tenant_files.py`` confines both). Either way the copy lands under a
    temporary name, its SHA-256 is compared with the source, and only then is it renamed
    into place: ``dest`` never holds a partial copy.
    ``src`` and ``dest`` may be templates.
    """

    type: Literal["file"]
    targets: Targets
    direction: Literal["push", "fetch"] = "push"
    src: str = Field(min_length=1)
    dest: str = Field(min_length=1)
    mode: str | None = Field(default=None, pattern=r"^0?[0-7]{3,4}$")

    # Field validators (not one model validator) so errors carry the field's path;
    # ``direction`` is declared first, so it is validated and visible here.
    @field_validator("src")
    @classmethod
    def _src(cls, src: str, info: ValidationInfo) -> str:
        if info.data.get("direction") == "fetch" and not src.startswith(("/", "{{")):
            raise ValueError("the path on the target must be absolute")
        return src

    @field_validator("dest")
    @classmethod
    def _dest(cls, dest: str, info: ValidationInfo) -> str:
        if info.data.get("direction", "push") == "push":
            if not dest.startswith(("/", "{{")):
                raise ValueError("the path on the target must be absolute")
        elif "{{" not in dest:
            raise ValueError(
                "a fetch needs one file per target; use a template such as fetched/{{ asset.id }}"
            )
        return dest


class JsonPathCheck(_Strict):
    path: str = Field(pattern=r"^\$(\.[A-Za-z_][A-Za-z0-9_-]*|\[\d+\])*$")
    equals: str | int | float | bool | None = None
    exists: bool = True


class HttpExpect(_Strict):
    status: int | list[int] = 200
    body_regex: str | None = None
    json_path: JsonPathCheck | None = None

    _regex = field_validator("body_regex")(_check_regex)


class HttpAuth(_Strict):
    """Bearer token or basic auth; the secret parts are secret references, resolved just
    in time by the worker like every other secret (never literals in a plan)."""

    bearer: StrOrSecret | None = None
    username: str | None = Field(default=None, min_length=1)
    password: StrOrSecret | None = None

    @field_validator("bearer", "password")
    @classmethod
    def _by_reference(cls, value: StrOrSecret | None) -> StrOrSecret | None:
        if isinstance(value, str):
            raise ValueError('must be a secret reference, e.g. {secret: "kv/api/token"}')
        return value

    @model_validator(mode="after")
    def _one_scheme(self) -> HttpAuth:
        basic = self.username is not None or self.password is not None
        if basic and (self.username is None or self.password is None):
            raise ValueError("basic auth needs both username and password")
        if basic == (self.bearer is not None):
            raise ValueError("give bearer, or username and password")
        return self


class HttpStep(_StepBase):
    """One HTTP request per target, sent from this machine; fields may use templates such
    as ``{{ asset.address }}``."""

    type: Literal["http"]
    targets: Targets
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    url: str = Field(min_length=1)
    headers: dict[str, StrOrSecret] = Field(default_factory=dict)
    body: str | None = None
    json_body: Any = Field(default=None, alias="json")
    verify_tls: bool = True
    auth: HttpAuth | None = None
    expect: HttpExpect = Field(default_factory=HttpExpect)

    def inferred_action_class(self) -> ActionClass:
        # GET and HEAD are safe methods (RFC 9110 section 9.2.1); any other may change state.
        return "read" if self.method in ("GET", "HEAD") else "modify"

    @model_validator(mode="after")
    def _one_body(self) -> HttpStep:
        if self.body is not None and self.json_body is not None:
            raise ValueError("give body or json, not both")
        return self


class SqlExpect(_Strict):
    #: rows returned (read) or rows affected (modify, deploy: a mismatch rolls back)
    rows: int | None = Field(default=None, ge=0)
    #: the exact result, as a list of rows, each a list of column values
    values: list[list[str | int | float | bool | None]] | None = None


class SqlStep(_StepBase):
    """A query against PostgreSQL, once per target. A step that declares ``modify`` or
    ``deploy`` runs in a transaction that the ``expect.rows`` guard can roll back; any
    other (declared ``read``, or no class given) in a read-only transaction."""

    type: Literal["sql"]
    targets: Targets
    #: a libpq connection string; a secret reference keeps its password out of the plan
    dsn: StrOrSecret
    query: str = Field(min_length=1)
    params: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    expect: SqlExpect | None = None

    @field_validator("dsn")
    @classmethod
    def _dsn_given(cls, dsn: StrOrSecret) -> StrOrSecret:
        # Not Field(min_length=1): that constraint cannot apply to the SecretRef member
        # and made pydantic raise a TypeError (a 500) for the documented secret form.
        if isinstance(dsn, str) and not dsn:
            raise ValueError("must not be empty")
        return dsn


class NoopStep(_StepBase):
    """Does nothing on its targets, yet goes through everything a step goes through (RBAC
    per target, the asset lock, a step attempt row and its events): for wiring, approval
    gates, dry plans and measuring the queue itself. Like StackStorm's ``core.noop``."""

    type: Literal["noop"]
    targets: Targets

    def inferred_action_class(self) -> ActionClass:
        return "read"  # it touches nothing, so running it again is harmless


class Expectations(_Strict):
    exit_code: int | None = None
    stdout_regex: str | None = None
    stdout_not_regex: str | None = None
    json_path: JsonPathCheck | None = None

    _regex_compiles = field_validator("stdout_regex", "stdout_not_regex")(_check_regex)

    @model_validator(mode="after")
    def _something(self) -> Expectations:
        if self.model_dump(exclude_none=True) == {}:
            raise ValueError(
                "give at least one of exit_code, stdout_regex, stdout_not_regex, json_path"
            )
        return self


class ValidateStep(_StepBase):
    """Assertions over the results of an earlier step, target by target."""

    type: Literal["validate"]
    step: str = Field(min_length=1, description="name of an earlier step")
    expect: Expectations

    def inferred_action_class(self) -> ActionClass:
        return "read"  # it reads recorded results and touches no target


Step = Annotated[
    CommandStep
    | ScriptStep
    | FileStep
    | HttpStep
    | SqlStep
    | NoopStep
    | ValidateStep
    | AnsibleStep,
    Field(discriminator="type"),
]
#: Steps that act on their targets (everything but validate; noop acts by doing nothing).
ActingStep = CommandStep | ScriptStep | AnsibleStep | FileStep | HttpStep | SqlStep | NoopStep


class Plan(_Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    approval_level: int = Field(default=0, ge=0, le=3)
    priority: int = Field(default=5, ge=1, le=10)
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 86_400)
    #: asset locks held per step (default) or for the whole execution
    lock: Literal["step", "execution"] = "step"
    #: declared parameters (params.py); their bound values are part of the plan hash
    params: dict[str, ParamSpec] = Field(default_factory=dict, max_length=200)
    steps: list[Step] = Field(min_length=1, max_length=500)
    #: rolling update (rollout.py): batches of hosts, each running every step before the
    #: next starts. None (not set) keeps breadth-first order, and the plan hash.
    serial: rollout.Serial | None = None
    #: after a batch, stop the rollout when more than this share of its hosts failed
    max_fail_percentage: float | None = Field(default=None, ge=0, le=100)

    _param_names = field_validator("params")(check_names)

    # Before: a clear sentence rather than one error per member of the union.
    _serial = field_validator("serial", mode="before")(rollout.check_serial)

    _int_is_fine = field_validator("timeout_s", "max_fail_percentage", mode="before")(
        _StepBase._int_is_fine.__func__  # type: ignore[attr-defined]
    )

    @model_validator(mode="after")
    def _steps_consistent(self) -> Plan:
        seen: set[str] = set()
        for index, step in enumerate(self.steps):
            if step.name in seen:
                raise PlanError(f"steps[{index}].name: duplicate step name {step.name!r}")
            if isinstance(step, ValidateStep) and step.step not in seen:
                raise PlanError(
                    f"steps[{index}].step: {step.step!r} is not the name of an earlier step"
                )
            seen.add(step.name)
        if self.max_fail_percentage is not None and self.serial is None:
            raise PlanError("max_fail_percentage: needs serial (it is checked after each batch)")
        return self

    @property
    def fail_limit(self) -> float:
        """``max_fail_percentage``, default 0: any failed host stops a rollout."""
        return self.max_fail_percentage or 0.0


def parse_plan(data: Any) -> Plan:
    """Validate already-decoded data; raise ``PlanError`` naming the first bad field."""
    if not isinstance(data, dict):
        raise PlanError("plan: must be a mapping with name and steps")
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        errors = [plan_errors.format_error(e) for e in exc.errors()]
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise PlanError("; ".join(errors[:3]) + more) from None


def load_plan_text(text: str, source: str = "plan") -> Plan:
    # YAML is a superset of JSON: one parser for both, bounded (safe_parse) so a small
    # document cannot expand, nest or count its way into a large amount of work.
    return parse_plan(safe_parse.load_yaml(text, source))


def load_plan_file(path: Path) -> Plan:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: cannot read: {exc}") from None
    return load_plan_text(text, str(path))


def plan_document(plan: Plan) -> dict[str, Any]:
    """The plan as plain JSON data, exactly the fields the author set (types normalised).

    Fields left out stay out, so a later version that adds an optional field does not change
    the hash of every existing plan; ``parse_plan`` fills the defaults back in.
    """
    document: dict[str, Any] = json.loads(plan.model_dump_json(exclude_unset=True, by_alias=True))
    return document
