"""Property-based fuzzing of the OpenAPI schema (schemathesis): no generated request, valid or
deliberately invalid, gets a 5xx, and every response conforms to the schema (status codes,
content types, bodies).

Bounded for CI: FACEGATE_FUZZ_EXAMPLES examples per operation and mode (default 10; about 30
operations × positive + negative ≈ 600 requests, well under a minute). Runs against the real
app on a temp SQLite gallery with an admin key, so every route is reached past authentication.
(Driven with plain Hypothesis ``@given`` over ``operation.as_strategy()``: schemathesis'
pytest fixture loader does not run under pytest 9.)
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = int(os.environ.get("FACEGATE_FUZZ_EXAMPLES", "10"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory, engine, photos):
    from facegate.gallery import ConsentSpec
    from facegate.service import Settings, create_app
    from facegate.service.backend import ensure_admin_key

    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("fuzz"), rate_limit_per_s=1e6, rate_limit_burst=10**6,
                              auth_failures_per_min=10**6, max_body_bytes=2 * 1024 * 1024), engine=engine)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the app's lifespan, once
    gallery = app.state.service.gallery
    admin = ensure_admin_key(gallery)
    gallery.create_collection("bank", purposes=["kyc"])
    gallery.enroll("bank", "S-1", photos["obama_1"], consent=ConsentSpec(["kyc"]))
    return schema, admin


def _operations():
    from facegate.service import Settings, create_app
    from facegate.service.auth import StaticKeys

    # Only to name the test cases; the fixture builds the app that is fuzzed.
    app = create_app(Settings(data_dir="/nonexistent"), engine=object(), authenticator=StaticKeys())
    spec = app.openapi()
    return [f"{m.upper()} {p}" for p, ops in sorted(spec["paths"].items()) for m in sorted(ops)]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
@pytest.mark.parametrize("label", _operations())
def test_operation_never_5xx_and_conforms(fuzz, label, mode):
    schema, admin = fuzz
    method, path = label.split(" ", 1)
    operation = schema[path][method].ok() if hasattr(schema[path][method], "ok") else schema[path][method]
    seen: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in ("authorization", "x-api-key")}
        headers["X-API-Key"] = admin
        case.headers = headers
        response = case.call()
        seen.append(str(response.status_code))
        assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:400]}"
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        if mode == GenerationMode.NEGATIVE:
            pytest.skip("the operation has no input that can be made invalid")
        raise
    assert seen
