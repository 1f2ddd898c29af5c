"""Broker files without a running broker: hashes, ACL lines, store, options, devices file."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from campuswatch.collector.broker import cli as broker_cli
from campuswatch.collector.broker import credentials as credentials_module
from campuswatch.collector.broker.acl import (
    BrokerAccount,
    BrokerFileError,
    account_rules,
    parse_acl,
    parse_password_file,
    render_acl,
)
from campuswatch.collector.broker.config import (
    BrokerConfigError,
    BrokerConfigOptions,
    check_mosquitto_conf,
    parse_devices_file,
    write_broker_config,
)
from campuswatch.collector.broker.credentials import BrokerCredentials, CredentialsError
from campuswatch.collector.broker.passwords import hash_password, verify_password
from campuswatch.collector.broker.pki import CertificateError, subject_alt_names
from tests.support import required


@pytest.fixture
def openssl() -> str:
    """write_broker_config makes its CA and certificates with the openssl command."""
    return required.program("openssl", "openssl")


def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    tool = required.program("mosquitto_passwd", "mosquitto")
    subprocess.run([tool, "-c", "-b", str(tmp_path / "pw"), "alice", "s3cret"], check=True)
    stored = (tmp_path / "pw").read_text().strip().split(":", 1)[1]
    assert stored.startswith("$7$")
    assert verify_password("s3cret", stored)
    assert not verify_password("S3cret", stored)


def test_own_hash_round_trips_and_bad_hashes_are_false() -> None:
    stored = hash_password("pw", salt=b"\x00" * 12)
    assert stored.startswith("$7$101$AAAAAAAAAAAAAAAA$")
    assert verify_password("pw", stored)
    for broken in ("", "$6$1$a$b", "$7$x$AAAA$AAAA", "$7$101$***$AAAA", "$7$0$AAAA$AAAA"):
        assert verify_password("pw", broken) is False


def test_device_rules_pin_the_device_and_exclude_its_cmd() -> None:
    rules = account_rules(BrokerAccount("pc-1", "device", "h", site="s1", device_id="pc-1"))
    writes = [r.split()[-1] for r in rules if r.startswith("topic write ")]
    reads = [r.split()[-1] for r in rules if r.startswith("topic read ")]
    assert all(t.startswith("cw/v1/s1/pc-1/") for t in writes + reads)
    assert "cw/v1/s1/pc-1/cmd" not in writes
    assert "cw/v1/s1/pc-1/discovery" in writes
    assert reads == ["cw/v1/s1/pc-1/cmd"]
    assert not any("#" in r or "+" in r for r in rules)


def test_collector_reads_everything_and_writes_only_commands() -> None:
    text = render_acl([BrokerAccount("collector", "collector", "h")])
    assert "user collector\ntopic read cw/v1/#\ntopic write cw/v1/+/+/cmd\n" in text


def test_store_add_rotate_revoke_and_list(tmp_path: Path) -> None:
    store = BrokerCredentials(tmp_path)
    first = store.add_device("school-a", "pc-1")
    second = store.add_device("school-b", "pc-1")  # re-enrolment: new site, new password
    assert first != second
    (account,) = store.list()
    assert account.site == "school-b"
    assert verify_password(second, account.password_hash)
    assert not verify_password(first, account.password_hash)
    assert "cw/v1/school-b/pc-1/state" in (tmp_path / "acl").read_text()
    assert "school-a" not in (tmp_path / "acl").read_text()
    assert oct((tmp_path / "credentials.json").stat().st_mode & 0o777) == "0o600"
    assert second not in (tmp_path / "credentials.json").read_text()

    assert store.revoke_device("pc-1") is True
    assert store.revoke_device("pc-1") is False
    assert store.list() == []
    assert (tmp_path / "passwd").read_text() == ""
    assert BrokerCredentials(tmp_path).revoked()[0].username == "pc-1"


def test_store_refuses_bad_ids_and_name_clashes(tmp_path: Path) -> None:
    store = BrokerCredentials(tmp_path)
    store.ensure_service_account("collector")
    with pytest.raises(CredentialsError):
        store.add_device("school a", "pc-1")
    with pytest.raises(CredentialsError):
        store.add_device("school-a", "cw/v1/#")
    with pytest.raises(CredentialsError):
        store.add_device("school-a", "collector")
    assert store.revoke_device("collector") is False


def test_reload_without_a_running_broker_is_reported_not_raised(tmp_path: Path) -> None:
    pid_file = tmp_path / "mosquitto.pid"
    assert BrokerCredentials(tmp_path, pid_file=pid_file).reload() is False
    pid_file.write_text("not a pid")
    assert BrokerCredentials(tmp_path, pid_file=pid_file).reload() is False
    # A pid that certainly does not exist any more: our own child, already reaped.
    child = subprocess.Popen(["true"])
    child.wait()
    assert BrokerCredentials(tmp_path, pid=child.pid).reload() is False


def test_damaged_store_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "credentials.json").write_text("{not json")
    with pytest.raises(CredentialsError, match="not valid JSON"):
        BrokerCredentials(tmp_path)
    (tmp_path / "credentials.json").write_text(json.dumps({"accounts": "x"}))
    with pytest.raises(CredentialsError):
        BrokerCredentials(tmp_path)


def test_damaged_entry_does_not_lock_out_the_others(tmp_path: Path) -> None:
    store = BrokerCredentials(tmp_path)
    store.add_device("school-a", "pc-1")
    data = json.loads((tmp_path / "credentials.json").read_text())
    data["accounts"].append({"username": "x", "role": "root"})
    data["accounts"].append({"username": "y", "role": "device", "unexpected": 1})
    (tmp_path / "credentials.json").write_text(json.dumps(data))
    assert [a.username for a in BrokerCredentials(tmp_path).list()] == ["pc-1"]


def test_devices_file_reports_every_bad_line(tmp_path: Path) -> None:
    devices = tmp_path / "devices.csv"
    devices.write_text(
        "site,device_id,role\n# comment\nschool-a,proj-1\nschool-a,cam-1,scanner\n"
        "bad site,x\nschool-a,proj-1\nschool-a,y,root\nonly-one\n",
        encoding="utf-8",
    )
    with pytest.raises(BrokerConfigError) as error:
        parse_devices_file(devices)
    lines = str(error.value).splitlines()
    assert [line.split(":")[1] for line in lines] == ["5", "6", "7", "8"]
    devices.write_text("school-a,proj-1\nschool-a,cam-1,scanner\n", encoding="utf-8")
    assert [(d.device_id, d.role) for d in parse_devices_file(devices)] == [
        ("proj-1", "device"),
        ("cam-1", "scanner"),
    ]


def test_subject_alt_names() -> None:
    assert subject_alt_names(["broker.school.vn", "10.0.0.5", "::1"]) == (
        "DNS:broker.school.vn,IP:10.0.0.5,IP:::1"
    )
    for bad in (["a,b"], ["x\nsubjectAltName=DNS:evil"], [""], []):
        with pytest.raises(CertificateError):
            subject_alt_names(bad)


def test_plain_listener_must_be_loopback(tmp_path: Path) -> None:
    options = BrokerConfigOptions(tmp_path, ("localhost",), plain_port=1883, plain_bind="0.0.0.0")
    with pytest.raises(BrokerConfigError, match="loopback"):
        write_broker_config(options)
    assert not (tmp_path / "mosquitto.conf").exists()


@pytest.mark.usefixtures("openssl")
def test_rerun_keeps_ca_devices_and_collector_password(tmp_path: Path) -> None:
    devices = tmp_path / "devices.csv"
    devices.write_text("school-a,proj-1\n", encoding="utf-8")
    options = BrokerConfigOptions(tmp_path / "b", ("localhost",), devices_file=devices)
    first = write_broker_config(options)
    ca, collector = first.ca_file.read_bytes(), first.collector_password_file.read_text()
    hashes = (tmp_path / "b" / "passwd").read_text()
    assert first.created_ca and first.issued == [("school-a", "proj-1", "device")]
    second = write_broker_config(options)
    assert not second.created_ca and second.issued == []
    assert second.ca_file.read_bytes() == ca
    assert second.collector_password_file.read_text() == collector
    assert (tmp_path / "b" / "passwd").read_text() == hashes
    assert oct(os.stat(tmp_path / "b" / "ca.key").st_mode & 0o777) == "0o600"


@pytest.mark.usefixtures("openssl")
def test_own_ca_is_used_and_a_mismatched_key_refused(tmp_path: Path) -> None:
    own = write_broker_config(BrokerConfigOptions(tmp_path / "own", ("localhost",)))
    other = write_broker_config(BrokerConfigOptions(tmp_path / "other", ("localhost",)))
    result = write_broker_config(
        BrokerConfigOptions(
            tmp_path / "b", ("localhost",), ca_cert=own.ca_file, ca_key=tmp_path / "own/ca.key"
        )
    )
    assert result.ca_file.read_bytes() == own.ca_file.read_bytes()
    assert not (tmp_path / "b" / "ca.key").exists()
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(own.ca_file), str(result.server_cert.cert)],
        capture_output=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0
    with pytest.raises(CertificateError, match="not the private key"):
        write_broker_config(
            BrokerConfigOptions(
                tmp_path / "c",
                ("localhost",),
                ca_cert=own.ca_file,
                ca_key=other.ca_file.parent / "ca.key",
            )
        )


def _plant(directory: Path, **account: object) -> None:
    """Put an entry into the store as an older version (or a hand edit) could have."""
    data = json.loads((directory / "credentials.json").read_text())
    data["accounts"].append(account)
    (directory / "credentials.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    "planted",
    [
        # Enrolled as "evil\n" before ids were matched whole: the id split its lines in two.
        {"username": "evil\n", "site": "school-a", "device_id": "evil\n"},
        {"username": "pc-9", "site": "school-a\ntopic readwrite #", "device_id": "pc-9"},
        {"username": "pc-9", "site": "school-a", "device_id": "pc-9\n"},
        {"username": "pc-8", "site": "school-a", "device_id": "pc-9"},
    ],
)
def test_store_entry_with_a_bad_id_never_reaches_the_broker_files(
    tmp_path: Path, planted: dict[str, str]
) -> None:
    store = BrokerCredentials(tmp_path)
    store.add_device("school-a", "pc-1")
    _plant(tmp_path, role="device", password_hash=hash_password("x"), **planted)
    BrokerCredentials(tmp_path).add_device("school-b", "pc-2")
    users = parse_password_file((tmp_path / "passwd").read_text())
    assert sorted(users) == ["pc-1", "pc-2"]
    rules = parse_acl((tmp_path / "acl").read_text())
    assert sorted(rules) == ["pc-1", "pc-2"]
    assert all("#" not in rule for rule in rules["pc-1"] + rules["pc-2"])
    assert [a.username for a in BrokerCredentials(tmp_path).list()] == ["pc-1", "pc-2"]


def test_store_entry_with_a_broken_hash_never_reaches_the_password_file(tmp_path: Path) -> None:
    store = BrokerCredentials(tmp_path)
    store.add_device("school-a", "pc-1")
    bad_hash = hash_password("x") + "\nroot:" + hash_password("y")
    _plant(tmp_path, username="pc-3", role="device", password_hash=bad_hash, site="school-a",
           device_id="pc-3")  # fmt: skip
    BrokerCredentials(tmp_path).write_files()
    assert sorted(parse_password_file((tmp_path / "passwd").read_text())) == ["pc-1"]


@pytest.mark.parametrize(
    "text",
    [
        "evil\n:$7$101$c2FsdA==$aGFzaA==\n",
        "pc-1:$7$101$c2FsdA==$aGFzaA==\npc-1:$7$101$c2FsdA==$aGFzaA==\n",
        "pc-1:plain\n",
        "pc 1:$7$101$c2FsdA==$aGFzaA==\n",
        "pc-1:$7$101$c2FsdA==$aGFzaA==",  # no final newline: a cut-off write
    ],
)
def test_password_file_parser_refuses_what_mosquitto_would_misread(text: str) -> None:
    with pytest.raises(BrokerFileError):
        parse_password_file(text)


@pytest.mark.parametrize(
    "text",
    [
        "topic read cw/v1/#\n",  # before any user line: it would apply to every client
        "user evil\n\ntopic write cw/v1/school-a/evil\n/state\n",
        "user pc-1\ntopic readwrite cw/v1/#\n",  # not a rule we ever write for a device
        "user pc-1\ntopic write cw/v1/school-a/pc-1/state\nuser pc-1\n",
        "user pc-1\npattern write cw/v1/%u/#\n",
        "user pc-1\ntopic write cw/v1/school-a/pc-1/state extra\n",
    ],
)
def test_acl_parser_refuses_what_mosquitto_would_misread(text: str) -> None:
    with pytest.raises(BrokerFileError):
        parse_acl(text)


def test_rendered_files_round_trip(tmp_path: Path) -> None:
    store = BrokerCredentials(tmp_path)
    store.ensure_service_account("collector")
    store.add_device("school-a", "pc-1")
    store.add_scanner("school-a", "scan-1")
    accounts = {a.username: a for a in store.list()}
    rules = parse_acl((tmp_path / "acl").read_text())
    assert rules == {name: account_rules(account) for name, account in accounts.items()}
    hashes = parse_password_file((tmp_path / "passwd").read_text())
    assert hashes == {name: account.password_hash for name, account in accounts.items()}


def test_files_that_do_not_round_trip_replace_nothing_and_reload_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BrokerCredentials(tmp_path)
    store.add_device("school-a", "pc-1")
    before = {name: (tmp_path / name).read_text() for name in ("passwd", "acl", "credentials.json")}
    reloads: list[int] = []

    def count_reload(self: BrokerCredentials) -> bool:
        reloads.append(1)
        return True

    monkeypatch.setattr(BrokerCredentials, "reload", count_reload)
    # A rendering defect (the last line of defence is the parse-back, not the renderer).
    monkeypatch.setattr(
        credentials_module, "render_acl", lambda accounts: "user pc-1\ntopic read cw/v1/#\n"
    )
    with pytest.raises(CredentialsError, match="acl"):
        store.add_device("school-a", "pc-2")
    after = {name: (tmp_path / name).read_text() for name in before}
    assert after == before and reloads == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".") and
                  not p.name.endswith(".lock")) == []  # fmt: skip


# The documented modes (docs/broker.md), and who must be able to read each file.
EXPECTED_MODES = {
    ".": 0o755,
    "data": 0o700,
    "run": 0o755,
    "mosquitto.conf": 0o644,
    "ca.pem": 0o644,
    "ca.key": 0o600,
    "server.pem": 0o644,
    "server.key": 0o640,
    "passwd": 0o640,
    "acl": 0o640,
    "credentials.json": 0o600,
    "collector.password": 0o600,
    "issued-credentials.csv": 0o600,
    ".credentials.lock": 0o600,
}


@pytest.mark.usefixtures("openssl")
@pytest.mark.parametrize("umask", [0o000, 0o077, 0o022])
def test_broker_config_file_modes_do_not_depend_on_the_umask(tmp_path: Path, umask: int) -> None:
    devices = tmp_path / "devices.csv"
    devices.write_text("school-a,proj-1\n", encoding="utf-8")
    previous = os.umask(umask)
    try:
        options = BrokerConfigOptions(tmp_path / "b", ("localhost",), devices_file=devices)
        write_broker_config(options)
    finally:
        os.umask(previous)
    modes = {name: (tmp_path / "b" / name).stat().st_mode & 0o777 for name in EXPECTED_MODES}
    assert {name: oct(mode) for name, mode in modes.items()} == {
        name: oct(mode) for name, mode in EXPECTED_MODES.items()
    }
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(set(EXPECTED_MODES) - {"."})


def test_config_refuses_a_value_that_would_start_a_line_of_its_own(tmp_path: Path) -> None:
    options = BrokerConfigOptions(
        tmp_path / "b", ("localhost",), listen_address="127.0.0.1\nallow_anonymous true"
    )
    with pytest.raises(BrokerConfigError, match="listen-address"):
        write_broker_config(options)
    with pytest.raises(BrokerConfigError, match="line 3"):
        check_mosquitto_conf("allow_anonymous false\nlistener 8883\nallow_anonymous true\n")


@pytest.fixture
def broker_dir(tmp_path: Path) -> Path:
    """A folder `broker config` wrote: the credential commands refuse any other."""
    write_broker_config(BrokerConfigOptions(tmp_path / "broker", ("localhost",)))
    return tmp_path / "broker"


@pytest.mark.parametrize("device_id", ["evil\n", "pc-1\n", "pc 1"])
def test_cli_add_device_refuses_an_id_that_is_not_whole(broker_dir: Path, device_id: str) -> None:
    result = CliRunner().invoke(
        broker_cli.app,
        ["add-device", "--dir", str(broker_dir), "--site", "school-a", "--device-id", device_id],
    )
    assert result.exit_code == 2 and "not a valid identifier" in result.output
    assert device_id.strip() not in (broker_dir / "passwd").read_text()


def test_cli_keeps_a_revoked_device_out_until_reinstated(broker_dir: Path) -> None:
    tmp_path = broker_dir
    runner = CliRunner()
    add = ["add-device", "--dir", str(tmp_path), "--site", "school-a", "--device-id", "proj-1"]
    assert runner.invoke(broker_cli.app, add).exit_code == 0
    revoke = ["revoke-device", "--dir", str(tmp_path), "--device-id", "proj-1"]
    assert runner.invoke(broker_cli.app, revoke).exit_code == 0
    again = runner.invoke(broker_cli.app, add)
    assert again.exit_code == 2 and "reinstate" in again.output
    reinstate = ["reinstate-device", "--dir", str(tmp_path), "--device-id", "proj-1"]
    assert runner.invoke(broker_cli.app, reinstate).exit_code == 0
    assert runner.invoke(broker_cli.app, reinstate).exit_code == 1  # nothing left to lift
    assert runner.invoke(broker_cli.app, add).exit_code == 0
    [revocation] = BrokerCredentials(tmp_path).revoked()
    assert revocation.reinstated_at is not None and revocation.reinstated_by
