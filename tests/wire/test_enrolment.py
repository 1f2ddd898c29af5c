"""The enrolment contract: machine matching, request decoding, the OpenAPI schemas."""

from __future__ import annotations

import re

import msgspec
import pytest

from campuswatch.wire.enrolment import (
    EnrolRequest,
    MachineFacts,
    decode_request,
    request_schema,
    sha256_hex,
)

MACS = ("3c:52:82:00:00:01",)


def facts(uuid: str | None, machine_id: str | None, macs: tuple[str, ...]) -> MachineFacts:
    return MachineFacts.from_plain(uuid, machine_id, macs)


ENROLLED = facts("4c4c4544-0001", "mid-golden", MACS)


UUID, OTHER_MAC = "4c4c4544-0001", ("aa:bb:cc:00:00:09",)


@pytest.mark.parametrize(
    ("case", "other", "same"),
    [
        ("identical", facts(UUID, "mid-golden", MACS), True),
        ("network card replaced", facts(UUID, "mid-golden", OTHER_MAC), True),
        ("OS re-installed", facts(UUID, "mid-new", MACS), True),
        ("disk cloned to other hardware", facts("uuid-2", "mid-golden", OTHER_MAC), False),
        ("cloned VM, copied MAC", facts("uuid-3", "mid-golden", MACS), False),
        ("other PC entirely", facts("uuid-4", "mid-other", OTHER_MAC), False),
    ],
)
def test_same_machine_tolerates_repairs_but_not_clones(
    case: str, other: MachineFacts, same: bool
) -> None:
    assert ENROLLED.is_same_machine(other) is same, case
    assert other.is_same_machine(ENROLLED) is same, f"{case} (reversed)"


def test_windows_without_smbios_uuid_tells_a_clone_by_its_macs() -> None:
    golden = facts(None, "machine-guid-1", ("00:11:22:33:44:55",))
    assert golden.is_same_machine(facts(None, "machine-guid-1", ("00:11:22:33:44:55",)))
    # Same MachineGuid (sysprep skipped), different network card: a clone.
    assert not golden.is_same_machine(facts(None, "machine-guid-1", ("00:11:22:33:44:66",)))


def test_facts_survive_the_database_round_trip() -> None:
    assert MachineFacts.from_json(ENROLLED.as_json()) == ENROLLED
    assert ENROLLED.mac_sha256 == {sha256_hex("3C:52:82:00:00:01")}  # case-insensitive


def test_decode_rejects_bad_requests_with_a_reason() -> None:
    good = EnrolRequest(token="cwe_" + "x" * 40, device_id="pc-1")
    assert decode_request(msgspec.json.encode(good)) == good
    for body, expected in (
        (b"not json", "malformed"),
        (b'{"token": "cwe_xxxxxxxxxx"}', "device_id"),
        (b'{"token": "cwe_xxxxxxxxxx", "device_id": "../etc"}', "device_id"),
        (b'{"token": "cwe_xxxxxxxxxx", "device_id": "pc-1", "mac_sha256": ["zz"]}', "mac_sha256"),
        (b'{"token": "cwe_xxxxxxxxxx", "device_id": "pc-1", "user": "x"}', "user"),
    ):
        with pytest.raises(ValueError, match=expected):
            decode_request(body)


def test_request_schema_is_inline_for_openapi() -> None:
    schema = request_schema()
    assert "$ref" not in str(schema)
    assert set(schema["required"]) == {"token", "device_id"}


@pytest.mark.parametrize(
    "changes",
    [
        {"device_id": "evil\n"},
        {"device_id": "pc-1\n"},
        {"token": "cwe_xxxxxxxxxx\n"},
        {"hostname": "LAB1\n"},
        {"mac_sha256": ["a" * 64 + "\n"]},
        {"product_uuid_sha256": "b" * 64 + "\n"},
    ],
)
def test_decode_matches_every_field_whole(changes: dict[str, object]) -> None:
    body = {"token": "cwe_xxxxxxxxxx", "device_id": "pc-1", **changes}
    with pytest.raises(ValueError):
        decode_request(msgspec.json.encode(body))


def test_request_schema_patterns_are_ecma() -> None:
    patterns = re.findall(r"'pattern': '([^']*)'", str(request_schema()))
    assert patterns and all("\\Z" not in pattern for pattern in patterns)


def test_unset_fields_are_not_sent() -> None:
    # A collector that predates a field refuses it as unknown, even as null.
    body = msgspec.json.decode(
        msgspec.json.encode(EnrolRequest(token="cwe_" + "x" * 40, device_id="pc-1"))
    )
    assert body == {"token": "cwe_" + "x" * 40, "device_id": "pc-1"}
