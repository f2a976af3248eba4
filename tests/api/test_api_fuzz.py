"""Property-based fuzzing of the API against its own OpenAPI document (schemathesis), through
a real ``opsc serve``: no 5xx, and every answer matches the published schema (status codes,
content types, bodies, headers). Bounded: a few examples per operation, no shrinking."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks

from tests.conftest import with_dbname
from tests.served import opsc

#: Bounded for the suite; raise it locally (OPSC_FUZZ_EXAMPLES=200) for a deeper run.
EXAMPLES_PER_OPERATION = int(os.environ.get("OPSC_FUZZ_EXAMPLES", "12"))
#: The suite replays the same examples every run (no flaky CI); OPSC_FUZZ_RANDOM=1 explores.
DERANDOMIZE = os.environ.get("OPSC_FUZZ_RANDOM") != "1"
CHECKS = [
    checks.not_a_server_error,
    checks.unsupported_method,  # 405 with an Allow header for methods a path lacks
    checks.allow_header_conformance,
    checks.missing_required_header,
    checks.ignored_auth,
    checks.negative_data_rejection,  # invalid input is a 4xx, not accepted
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_target(
    pg_server: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One server for the whole fuzz run, on its own database, with an admin token."""
    name = f"opsc_fuzz_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    home = tmp_path_factory.mktemp("fuzz-home")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OPSC_")},
        "DATABASE_URL": with_dbname(pg_server, name),
        "OPSC_HOME": str(Path(home)),
        "OPSC_TENANT": "fuzz",
        "COLUMNS": "200",
    }
    made = opsc(env, "tokens", "create", "fuzzer", "--role", "admin")
    token = re.search(r"^(opsc_\S+)$", made.stdout, re.MULTILINE)
    assert token, made.stdout + made.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsconductor.cli", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    base = None
    for line in proc.stdout:
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)/api/v1", line)
        if found:
            base = found[1]
            break
    assert base, proc.stderr.read() if proc.stderr else ""
    try:
        yield {"base": base, "headers": {"Authorization": f"Bearer {token[1]}"}}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Hundreds of requests to a server process: on a loaded machine, and beside the suite's other
# workers, this takes minutes; pytest-timeout's 120 s default is there to catch hangs.
@pytest.mark.timeout(600)
def test_api_never_errors_and_matches_its_schema(fuzz_target: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_target['base']}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15  # the document lists the whole API

    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    for operation, mode in ((o, m) for o in operations for m in modes):
        if operation.path.endswith("/stream"):
            continue  # an accepted stream never ends; test_streams.py covers them

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=DERANDOMIZE,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(
                base_url=fuzz_target["base"], headers=fuzz_target["headers"], checks=CHECKS
            )

        try:
            check()
        except Unsatisfiable:
            # No invalid input exists for an operation without parameters (/healthz).
            assert mode is schemathesis.GenerationMode.NEGATIVE, operation.path
