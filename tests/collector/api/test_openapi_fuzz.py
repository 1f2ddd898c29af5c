"""Schemathesis against the collector's live OpenAPI: no 5xx, every answer as documented,
every refusal counted.

Every operation under /api/v1 gets valid and invalid requests (and requests that name the
seeded sites, devices, assets, alerts and tokens), as an admin and without a token, on a
SQLite and a PostgreSQL register. Hypothesis drives schemathesis' strategies directly
(``operation.as_strategy``): the ``schemathesis.pytest.from_fixture`` loader sets
``Function._nodeid``, which pytest 9 no longer has.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis import Case, CheckFunction, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from campuswatch.collector.api.app import create_app
from campuswatch.collector.api.rejects import UNMATCHED
from campuswatch.collector.service import CollectorService
from campuswatch.collector.settings import CollectorSettings
from campuswatch.collector.signals import AlertSignal, Evidence
from campuswatch.wire import encode_message
from campuswatch.wire.ids import utc_now
from campuswatch.wire.messages import AvMessage, HealthMessage
from tests.collector.test_api import inventory
from tests.collector.test_ingest_e2e import publish
from tests.support import required
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import free_port
from tests.support.postgres import temporary_postgres_database
from tests.support.waiting import wait_until

ADMIN_TOKEN = "fuzz-admin-" + secrets.token_urlsafe(16)
SITE = "hn-bd-a"
DEVICES = ("pc-a1", "pc-a2")
CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


@dataclass
class FuzzTarget:
    service: CollectorService
    known: dict[str, list[Any]]
    """Ids of seeded objects by path parameter name, mixed into the generated ones."""
    protected_tokens: set[int]
    """The admin tokens the fuzzer uses: never revoked by a generated DELETE."""
    answered_4xx: Counter[tuple[str, str]] = field(default_factory=Counter)
    """4xx answers the fuzzer saw, by (method, status)."""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzTarget]:
    required.program("mosquitto", "mosquitto")
    workdir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    broker_dir = workdir / "broker-config"
    broker_dir.mkdir()
    broker = MosquittoBroker(workdir, free_port())
    broker.start()
    database: AbstractContextManager[str | None] = (
        nullcontext() if request.param == "sqlite" else temporary_postgres_database("cw_fuzz")
    )
    try:
        with database as db:
            service = CollectorService(
                CollectorSettings(
                    broker=broker.url,
                    data_dir=workdir / "data",
                    db=db,
                    admin_token=SecretStr(ADMIN_TOKEN),
                    batch_wait_s=0.02,
                    broker_dir=broker_dir,
                    agent_broker_url=broker.url,
                )
            )
            service.start()
            try:
                assert service.ingestor.connection.wait_connected(10)
                yield _seed(service, broker)
            finally:
                service.stop()
    finally:
        broker.stop()


def _seed(service: CollectorService, broker: MosquittoBroker) -> FuzzTarget:
    api = TestClient(create_app(service.api_context))
    api.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    for body in (
        {"id": "hn", "level": "province", "name": "Hà Nội"},
        {"id": "hn-bd", "parent_id": "hn", "level": "district", "name": "Ba Đình"},
        {"id": SITE, "parent_id": "hn-bd", "level": "school", "name": "THCS A"},
    ):
        assert api.put(f"/api/v1/sites/{body['id']}", json=body).status_code == 200
    now = utc_now()
    for device in DEVICES:
        publish(broker, *inventory(SITE, device, "12.4"))
        av = AvMessage(device_id=device, site=SITE, status="protected")
        publish(broker, f"cw/v1/{SITE}/{device}/av", encode_message(av))
        for minutes in range(30, 0, -5):
            health = HealthMessage(
                device_id=device, site=SITE, ts=now - timedelta(minutes=minutes), cpu_pct=minutes
            )
            publish(broker, f"cw/v1/{SITE}/{device}/health", encode_message(health))
    publish(broker, f"cw/v1/{SITE}/pc-a1/health", b"\xff not a message")  # a dead letter
    wait_until(lambda: service.ingestor.stats.stored_total >= 16)
    service.alerting.manager.process([_alert(device, now) for device in DEVICES], now)
    spare = api.post("/api/v1/tokens", json={"name": "spare", "role": "viewer"}).json()
    return FuzzTarget(
        service,
        known={
            "site_id": ["hn", "hn-bd", SITE],
            "device_id": list(DEVICES),
            "asset_id": [row["id"] for row in api.get("/api/v1/assets").json()["items"]],
            "alert_id": [row["id"] for row in api.get("/api/v1/alerts").json()["items"]],
            "token_id": [spare["id"]],
        },
        protected_tokens={
            row["id"] for row in api.get("/api/v1/tokens").json() if row["id"] != spare["id"]
        },
    )


def _alert(device: str, now: Any) -> AlertSignal:
    return AlertSignal(
        rule_id="av-signatures-outdated",
        rule_title="AV signatures outdated",
        level="medium",
        status="firing",
        fingerprint=f"av-signatures-outdated|{SITE}|{device}",
        site_id=SITE,
        device_id=device,
        summary=f"signatures outdated on {device}",
        at=now,
        labels={"product": "Defender"},
        evidence=(Evidence(message_id=f"m-{device}", kind="av", ts=now, excerpt={"age": 9}),),
    )


@pytest.fixture(scope="module")
def api_schema(fuzz_target: FuzzTarget) -> Any:
    app = create_app(fuzz_target.service.api_context)
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    # The bearer token is each test's business, not a parameter to generate or leave out.
    loaded.config.generation.update(with_security_parameters=False)
    return loaded.include(path_regex="^/api/v1/")


def _with_nul(case: Case[Any]) -> st.SearchStrategy[Case[Any]]:
    """The case with a NUL in one of its texts: PostgreSQL cannot take one, and hypothesis
    rarely draws it."""
    slots = [
        (part, key)
        for part in ("path_parameters", "query")
        for key, value in (getattr(case, part) or {}).items()
        if isinstance(value, str)
    ]
    if isinstance(case.body, dict):
        slots += [("body", key) for key, value in case.body.items() if isinstance(value, str)]
    if not slots:
        return st.just(case)

    def poison(slot: tuple[str, str]) -> Case[Any]:
        part, key = slot
        values = dict(getattr(case, part))
        values[key] += "\x00"
        setattr(case, part, values)
        return case

    return st.sampled_from(slots).map(poison)


def _cases(operation: Any, target: FuzzTarget) -> st.SearchStrategy[Case[Any]]:
    """Valid and invalid requests, texts with NUL; where the path names an object, also the
    seeded ones (random ids only ever meet 404)."""
    choices = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
        operation.as_strategy(GenerationMode.POSITIVE).flatmap(_with_nul),
    ]
    names = [p.name for p in operation.path_parameters if p.name in target.known]
    if names:
        seeded = st.fixed_dictionaries({n: st.sampled_from(target.known[n]) for n in names})
        choices.append(seeded.flatmap(lambda ids: operation.as_strategy(path_parameters=ids)))
    return st.one_of(choices).filter(
        lambda case: (case.path_parameters or {}).get("token_id") not in target.protected_tokens
    )


def _fuzz(
    api_schema: Any,
    target: FuzzTarget,
    call: Callable[[Case[Any]], Any],
    max_examples: int,
) -> set[str]:
    """Run ``call`` on generated cases of every operation; fail listing every broken one.
    Returns the operations' labels."""
    failures: dict[str, BaseException] = {}
    labels: set[str] = set()
    for result in api_schema.get_all_operations():
        operation = result.ok()
        labels.add(operation.label)

        @_settings(max_examples)
        @given(case=_cases(operation, target))
        def run(case: Case[Any]) -> None:
            response = call(case)
            if 400 <= response.status_code < 500:
                target.answered_4xx[(case.method.upper(), str(response.status_code))] += 1

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup
            failures[operation.label] = exc
    report = "\n\n".join(f"{label}:\n{exc}" for label, exc in failures.items())
    assert not failures, f"{len(failures)} operation(s) misbehave:\n{report}"
    return labels


def _rejects_by_method_and_status(target: FuzzTarget) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for (_route, method, status), count in target.service.api_context.rejects.counts().items():
        counts[(method, status)] += count
    return counts


def _assert_every_reject_counted(
    target: FuzzTarget, before: Counter[tuple[str, str]], labels: set[str]
) -> None:
    counted = _rejects_by_method_and_status(target) - before
    assert counted == target.answered_4xx
    templates = {label.split(" ", 1)[1] for label in labels}
    routes = {route for route, _, _ in target.service.api_context.rejects.counts()}
    # Route templates, never raw paths: random ids must not make new series.
    assert routes <= templates | {UNMATCHED}, routes - templates


def test_an_admin_gets_no_server_error_and_only_documented_answers(
    api_schema: Any, fuzz_target: FuzzTarget
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def call(case: Case[Any]) -> Any:
        return case.call_and_validate(headers=admin, checks=CHECKS)

    before = _rejects_by_method_and_status(fuzz_target)
    fuzz_target.answered_4xx.clear()
    labels = _fuzz(api_schema, fuzz_target, call, max_examples=25)
    assert {"GET /api/v1/devices/{device_id}/series", "PATCH /api/v1/assets/{asset_id}"} <= labels
    _assert_every_reject_counted(fuzz_target, before, labels)


def test_without_a_token_every_operation_is_refused(
    api_schema: Any, fuzz_target: FuzzTarget
) -> None:
    def call(case: Case[Any]) -> Any:
        response = case.call_and_validate(checks=CHECKS)
        if case.operation.definition.raw.get("security"):
            # 400/422: a body FastAPI cannot read or parse is refused before the token is
            # looked at, and so is a NUL anywhere.
            assert response.status_code in (400, 401, 422), response.text
        return response

    before = _rejects_by_method_and_status(fuzz_target)
    fuzz_target.answered_4xx.clear()
    labels = _fuzz(api_schema, fuzz_target, call, max_examples=10)
    _assert_every_reject_counted(fuzz_target, before, labels)


def test_every_operation_but_enrolment_requires_a_token(api_schema: Any) -> None:
    public = {
        result.ok().label
        for result in api_schema.get_all_operations()
        if not result.ok().definition.raw.get("security")
    }
    assert public == {"POST /api/v1/enrol"}
