"""The enrolment exchange: an agent trades a school's enrolment token for its own MQTT login.

One HTTP call, ``POST /api/v1/enrol``, owned by this module on both sides (the agent encodes
with it, the collector decodes with it), so the two cannot drift. msgspec, not pydantic:
the agent's memory budget has no room for pydantic.

The machine is described by unsalted SHA-256 hashes of its hardware facts, not the facts
themselves: the collector only needs to tell "the same machine again" from "a clone using
the same device id", and hashes are enough for that.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Final, Literal, get_args

import msgspec
from msgspec import Meta

from campuswatch.wire.messages import Identifier
from campuswatch.wire.schema import ecma_patterns

ENROL_PATH: Final = "/api/v1/enrol"
MAX_REQUEST_BYTES: Final = 16 * 1024

# ``\Z``: ``$`` would let one trailing newline through (it matches before it).
NO_CONTROL_CHARACTERS: Final = r"^[^\x00-\x1f\x7f]*\Z"
Sha256Hex = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z")]
RefusalReason = Literal[
    "token_unknown",
    "token_expired",
    "token_exhausted",
    "token_revoked",
    "device_revoked",
    "clone",
    "already_enrolled",
    "not_configured",
    "invalid",
]

REFUSAL_REASONS: Final = get_args(RefusalReason)


class EnrolRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    # omit_defaults: a field left unset is not sent, so a collector that predates it (and
    # refuses unknown fields) still accepts a first enrolment from a newer agent.
    token: Annotated[str, Meta(min_length=8, max_length=256, pattern=NO_CONTROL_CHARACTERS)]
    device_id: Identifier
    product_uuid_sha256: Sha256Hex | None = None
    machine_id_sha256: Sha256Hex | None = None
    mac_sha256: Annotated[list[Sha256Hex], Meta(max_length=64)] = msgspec.field(
        default_factory=list
    )
    hostname: Annotated[str, Meta(max_length=255, pattern=NO_CONTROL_CHARACTERS)] | None = None
    agent_version: Annotated[str, Meta(max_length=64, pattern=NO_CONTROL_CHARACTERS)] | None = None
    broker_password: (
        Annotated[str, Meta(min_length=1, max_length=256, pattern=NO_CONTROL_CHARACTERS)] | None
    ) = None
    """The device's current broker password, when it re-enrols an id it already holds: the
    proof that the request comes from that device, not from someone who knows its id and
    its MAC addresses. The collector checks it against the stored hash and never keeps it."""


class EnrolResponse(msgspec.Struct, kw_only=True):
    device_id: str
    site: str
    username: str
    password: str
    broker_url: str
    ca_pem: str | None = None
    """The broker's CA certificate, so the agent can verify ``mqtts://`` without set-up."""


class EnrolRefusal(msgspec.Struct, kw_only=True):
    reason: RefusalReason
    detail: str


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.strip().lower().encode("utf-8")).hexdigest()


class MachineFacts(msgspec.Struct, frozen=True, kw_only=True):
    """Hashed hardware facts of one machine, as sent in an enrolment request."""

    product_uuid_sha256: str | None = None
    machine_id_sha256: str | None = None
    mac_sha256: frozenset[str] = frozenset()

    @classmethod
    def from_plain(
        cls, product_uuid: str | None, machine_id: str | None, macs: tuple[str, ...] | list[str]
    ) -> MachineFacts:
        return cls(
            product_uuid_sha256=sha256_hex(product_uuid) if product_uuid else None,
            machine_id_sha256=sha256_hex(machine_id) if machine_id else None,
            mac_sha256=frozenset(sha256_hex(mac) for mac in macs),
        )

    @classmethod
    def from_request(cls, request: EnrolRequest) -> MachineFacts:
        return cls(
            product_uuid_sha256=request.product_uuid_sha256,
            machine_id_sha256=request.machine_id_sha256,
            mac_sha256=frozenset(request.mac_sha256),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "product_uuid_sha256": self.product_uuid_sha256,
            "machine_id_sha256": self.machine_id_sha256,
            "mac_sha256": sorted(self.mac_sha256),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MachineFacts:
        return cls(
            product_uuid_sha256=data.get("product_uuid_sha256"),
            machine_id_sha256=data.get("machine_id_sha256"),
            mac_sha256=frozenset(data.get("mac_sha256") or ()),
        )

    def is_same_machine(self, other: MachineFacts) -> bool:
        """Tolerant: a re-installed OS or a replaced network card is the same PC; a clone is not.

        - a NIC replaced: SMBIOS UUID and OS machine id still agree;
        - the OS re-installed (new machine id): the UUID agrees and a MAC is still there;
        - a cloned disk on other hardware: the machine id agrees but UUID and MACs differ;
        - a cloned VM: new UUID and MACs, same machine id.
        """
        uuid_match = _agree(self.product_uuid_sha256, other.product_uuid_sha256)
        machine_id_match = _agree(self.machine_id_sha256, other.machine_id_sha256)
        macs_overlap = bool(self.mac_sha256 & other.mac_sha256)
        if uuid_match is False:
            return False
        if uuid_match and machine_id_match:
            return True
        if macs_overlap:
            return uuid_match is True or machine_id_match is not False
        if not self.mac_sha256 or not other.mac_sha256:
            # No MACs to compare (e.g. a container): only the ids can decide.
            return bool(uuid_match or (uuid_match is None and machine_id_match))
        return False


def _agree(left: str | None, right: str | None) -> bool | None:
    """True/False when both sides know the fact, None when either does not."""
    if left is None or right is None:
        return None
    return left == right


_request_decoder = msgspec.json.Decoder(EnrolRequest)
_response_decoder = msgspec.json.Decoder(EnrolResponse)
_refusal_decoder = msgspec.json.Decoder(EnrolRefusal)


def decode_request(body: bytes) -> EnrolRequest:
    """Raise ``ValueError`` with a reason a person can act on."""
    if len(body) > MAX_REQUEST_BYTES:
        raise ValueError(f"request larger than {MAX_REQUEST_BYTES} bytes")
    try:
        return _request_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(str(exc)) from None


def decode_response(body: bytes) -> EnrolResponse:
    try:
        return _response_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"unexpected enrolment response: {exc}") from None


def decode_refusal(body: bytes) -> EnrolRefusal | None:
    try:
        return _refusal_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def request_schema() -> dict[str, Any]:
    """JSON Schema of the request, for the collector's OpenAPI document."""
    schema: dict[str, Any] = msgspec.json.schema(EnrolRequest)
    return _inline(schema)


def response_schema(kind: type[EnrolResponse] | type[EnrolRefusal]) -> dict[str, Any]:
    return _inline(msgspec.json.schema(kind))


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """msgspec puts structs under ``$defs``; OpenAPI wants them inline here, ECMA patterns."""
    schema = ecma_patterns(schema)
    definitions = schema.pop("$defs", {})
    reference = schema.pop("$ref", None)
    if reference is None:
        return schema
    name = reference.rsplit("/", 1)[-1]
    resolved: dict[str, Any] = definitions[name]
    return resolved
