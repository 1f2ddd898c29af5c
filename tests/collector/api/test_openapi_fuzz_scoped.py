"""Schemathesis with a token of every role and scope: no 5xx, and no object outside the
token's scope read or changed (issue 13, items 3 and 9).

Each (role, scope) pair gets a fresh register seeded with two districts (``scope_world``):
every operation under /api/v1 gets valid and invalid requests, and requests that name the
seeded sites, devices, assets, alerts and tokens of both districts, in the path, the query
and the body. After each request, the answer must name no site or device outside the
token's scope that the request did not name itself; after the run, every row outside the
scope (sites, devices, assets, alerts, tokens, enrolment tokens, enrolments) must be as it
was. Hypothesis drives schemathesis' strategies directly, as in ``test_openapi_fuzz``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckFunction, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from campuswatch.collector.db.models import ROLES, ApiToken
from campuswatch.collector.enrolment.models import EnrolmentToken
from tests.collector.api.scope_world import (
    DEVICES,
    SCOPES,
    SITES,
    SUBTREES,
    ScopeWorld,
    foreign_devices,
    foreign_rows,
    foreign_sites,
    scope_world,
)

MAX_EXAMPLES: Final = 10
"""Per operation and scoped token: 31 operations x 8 tokens in about a minute and a half."""
MAX_EXAMPLES_UNSCOPED: Final = 3
"""An unscoped token has nothing outside its scope; only "no 5xx" is left to check, which
``test_openapi_fuzz`` does at length for the admin."""
CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
ID_FIELDS: Final = ("site_id", "parent_id", "site_scope", "device_id")
"""Body and query fields that name a site or a device: filled with seeded ids too."""
_ID_CHARS: Final = "A-Za-z0-9_.:-"


def _ancestors(scope: str | None) -> set[str]:
    """The scope root's parent, grandparent …: their ids are the path to the scope (shown as
    the root's ``parent_id``), not objects the token reads."""
    parents = {site: parent for site, parent, _ in SITES}
    found: set[str] = set()
    current = parents.get(scope) if scope else None
    while current is not None:
        found.add(current)
        current = parents[current]
    return found


@pytest.fixture(
    params=[(role, scope) for role in ROLES for scope in SCOPES],
    ids=lambda token: f"{token[0]}-{token[1] or 'all'}",
)
def token(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    value: tuple[str, str | None] = request.param
    return value


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ScopeWorld]:
    with scope_world(f"sqlite:///{tmp_path / 'register.db'}", tmp_path) as built:
        yield built


Ids = dict[str, list[Any]]
"""Seeded ids by the path parameter or field name that takes them."""


def _known_ids(world: ScopeWorld, scope: str | None) -> tuple[Ids, Ids, Ids]:
    """Every seeded id; those inside ``scope``; those outside it."""
    inside_sites = SUBTREES[scope]
    with world.sessions() as session:
        token_ids = list(session.scalars(select(ApiToken.id)))
        token_ids += list(session.scalars(select(EnrolmentToken.id)))

    def ids(keep: Callable[[str], bool]) -> Ids:
        sites = [site for site, _, _ in SITES if keep(site)]
        return {
            "site_id": sites,
            "parent_id": sites,
            "site_scope": sites,
            "device_id": [device for device, site in DEVICES if keep(site)],
            "asset_id": [world.asset_ids[device] for device, site in DEVICES if keep(site)],
            "alert_id": [alert for site, alert in world.alert_ids.items() if keep(site)],
            "token_id": token_ids,
        }

    return (
        ids(lambda _: True),
        ids(lambda site: site in inside_sites),
        ids(lambda site: site not in inside_sites),
    )


def _body_id_fields(spec: dict[str, Any], operation: Any) -> list[str]:
    """The JSON body's fields that name a site or device, optional ones included (a
    generated body often leaves those out, and a missing parent_id never crosses a scope)."""
    body = spec["paths"][operation.path][operation.method.lower()].get("requestBody", {})
    schema = body.get("content", {}).get("application/json", {}).get("schema", {})
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return [name for name in schema.get("properties", {}) if name in ID_FIELDS]


def _named_ids(case: Case[Any], known: Ids, body_fields: list[str]) -> st.SearchStrategy[Case[Any]]:
    """The case with seeded site and device ids in its query and body fields that take one
    (a PUT of a site keeps its body id equal to the path's)."""
    slots = [("query", key) for key in (case.query or {}) if key in ID_FIELDS]
    if isinstance(case.body, dict):
        slots += [("body", key) for key in {*case.body, *body_fields} if key in ID_FIELDS]
    if not slots:
        return st.just(case)

    def fill(values: dict[tuple[str, str], Any]) -> Case[Any]:
        for (part, key), value in values.items():
            target = dict(getattr(case, part))
            target[key] = value
            setattr(case, part, target)
        path = case.path_parameters or {}
        if isinstance(case.body, dict) and "id" in case.body and "site_id" in path:
            case.body = {**case.body, "id": path["site_id"]}
        return case

    return st.fixed_dictionaries({slot: st.sampled_from(known[slot[1]]) for slot in slots}).map(
        fill
    )


def _cases(
    operation: Any, known: tuple[Ids, Ids, Ids], own_token: int, spec: dict[str, Any]
) -> st.SearchStrategy[Case[Any]]:
    """Valid and invalid requests; requests naming seeded objects anywhere; and crossed ones
    (a foreign object in the path with ids from inside the scope in the body, and the other
    way round), the shape of a confused-deputy write such as re-parenting a foreign school."""
    every, inside, outside = known
    fields = _body_id_fields(spec, operation)

    def naming(ids: Ids) -> Callable[[Case[Any]], st.SearchStrategy[Case[Any]]]:
        return lambda case: _named_ids(case, ids, fields)

    positive = operation.as_strategy(GenerationMode.POSITIVE)
    choices = [
        positive,
        operation.as_strategy(GenerationMode.NEGATIVE),
        positive.flatmap(naming(every)),
    ]
    names = [p.name for p in operation.path_parameters if p.name in every]
    pairs = [(every, every)]
    if outside["site_id"]:
        pairs += [(outside, inside), (inside, outside)]
    for in_path, in_body in pairs:
        if names and all(in_path[n] for n in names):
            seeded = st.fixed_dictionaries({n: st.sampled_from(in_path[n]) for n in names})
            with_ids = seeded.flatmap(lambda ids: operation.as_strategy(path_parameters=ids))
            choices.append(with_ids.flatmap(naming(in_body)))
        elif not names and in_body is not every:
            choices.append(positive.flatmap(naming(in_body)))
    # The fuzzer's own token stays usable; any other may be revoked if the scope allows it.
    return st.one_of(choices).filter(
        lambda case: (case.path_parameters or {}).get("token_id") != own_token
    )


def _request_text(case: Case[Any]) -> str:
    parts = [case.path_parameters, case.query, case.body]
    return json.dumps(parts, default=repr)


def _leaked(case: Case[Any], text: str, foreign: set[str]) -> set[str]:
    """Foreign ids in the answer that the request did not name (an echo is not a leak)."""
    asked = _request_text(case)
    return {
        name
        for name in foreign
        if re.search(rf"(?<![{_ID_CHARS}]){re.escape(name)}(?![{_ID_CHARS}])", text)
        and name not in asked
    }


def test_no_token_reads_or_changes_anything_outside_its_scope(
    world: ScopeWorld, token: tuple[str, str | None]
) -> None:
    role, scope = token
    loaded = schemathesis.openapi.from_asgi("/openapi.json", world.app)
    # The bearer token is the test's business, not a parameter to generate or leave out.
    loaded.config.generation.update(with_security_parameters=False)
    api_schema: Any = loaded.include(path_regex="^/api/v1/")
    headers = {"Authorization": f"Bearer {world.tokens[token]}"}
    foreign = set(foreign_sites(scope) | foreign_devices(scope)) - _ancestors(scope)
    known = _known_ids(world, scope)
    spec = world.app.openapi()
    before = foreign_rows(world, scope)
    failures: dict[str, BaseException] = {}

    for result in api_schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=MAX_EXAMPLES if scope else MAX_EXAMPLES_UNSCOPED,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        @given(case=_cases(operation, known, world.token_ids[token], spec))
        def run(case: Case[Any]) -> None:
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            leaked = _leaked(case, response.content.decode("utf-8", "replace"), foreign)
            assert not leaked, f"{role}@{scope} read {sorted(leaked)}: {response.text[:500]}"

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup
            failures[operation.label] = exc

    report = "\n\n".join(f"{label}:\n{exc}" for label, exc in failures.items())
    assert not failures, f"{len(failures)} operation(s) misbehave:\n{report}"
    changed = {
        table: rows for table, rows in foreign_rows(world, scope).items() if rows != before[table]
    }
    assert changed == {}, f"{role}@{scope} changed rows outside its scope"
    assert all(command.site not in foreign for command in world.commands)
