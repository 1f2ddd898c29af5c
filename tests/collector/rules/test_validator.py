"""The validator reports every problem of every file, each at the right file:line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from campuswatch.collector.rules.cli import app
from campuswatch.collector.rules.loader import check_rule_pack, load_rule_pack
from campuswatch.collector.rules.model import RulePackError

GOOD = """\
id: 11111111-2222-4333-8444-555555555555
title: {en: Good rule, vi: Quy tắc tốt}
level: high
status: test
subject: device
condition:
  match:
    kind: av
    where:
      - field: status
        equals: no_av
summary: {en: "x on {device_id}", vi: "x trên {device_id}"}
runbook:
  en: Do this.
  vi: Làm việc này.
description: {en: Why it matters., vi: Vì sao điều này quan trọng.}
"""
GOOD_TEST = """\
steps:
  - at: 0s
    message: {kind: av, site: s1, device_id: pc-1, status: no_av}
expect:
  - subject: {site: s1, device: pc-1}
    statuses: [firing]
"""

# One file with many problems; the comment on each line names the problem expected there.
BAD = """\
id: not-a-uuid
title: Bad rule
level: severe
status: test
subject: device
condition:
  match:
    kind: antivirus
    for: 10 minutes
    where:
      - field: products[*].realtime_protecton
        equals: false
      - field: status
        equal: no_av
summary: "{nonsense} on {device_id}"
runbook:
  en: Do this.
"""
BAD_LINES = {
    "bad-uuid": 1,
    "schema": 3,
    "unknown-kind": 8,
    "bad-duration": 9,
    "unknown-operator": 14,
    "missing-language": 16,
}

FIELDS = """\
id: 21111111-2222-4333-8444-555555555555
title: {en: Field problems, vi: Lỗi trường}
level: low
status: test
subject: device
condition:
  match:
    kind: av
    where:
      - field: products[*].realtime_protecton
        equals: false
      - field: status
        equals: no_avv
      - field: status
        gt: 3
summary: {en: "s", vi: "ś"}
runbook: {en: a, vi: ấ}
description: {en: d, vi: đ}
"""


def write(folder: Path, name: str, text: str, test: str | None = GOOD_TEST) -> None:
    (folder / name).write_text(text, encoding="utf-8")
    if test is not None:
        (folder / name.replace(".yaml", ".test.yaml")).write_text(test, encoding="utf-8")


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    root = tmp_path / "rules"
    (root / "antivirus").mkdir(parents=True)
    write(root / "antivirus", "good.yaml", GOOD)
    write(root / "antivirus", "duplicate.yaml", "# same id again\n" + GOOD)
    write(root / "antivirus", "bad.yaml", BAD)
    write(root, "fields.yaml", FIELDS, test=None)
    return root


def test_every_problem_is_reported_at_its_line(pack: Path) -> None:
    _, problems = check_rule_pack(pack)
    bad = {(p.code, p.line) for p in problems if p.file.endswith("bad.yaml")}
    for code, line in BAD_LINES.items():
        assert (code, line) in bad, (code, line, sorted(bad))
    fields = {(p.code, p.line) for p in problems if p.file.endswith("fields.yaml")}
    assert ("unknown-field", 10) in fields
    assert ("bad-operator", 13) in fields  # no_avv is not a status
    assert ("bad-operator", 15) in fields  # gt on a text field
    assert ("missing-test", 1) in fields
    duplicate = [p for p in problems if p.code == "duplicate-id"]
    # Files are read in name order: duplicate.yaml (id on line 2) first, good.yaml second.
    assert len(duplicate) == 1
    assert duplicate[0].file.endswith("good.yaml") and duplicate[0].line == 1
    assert "rules/antivirus/duplicate.yaml:2" in duplicate[0].message


def test_unknown_field_message_names_the_known_fields(pack: Path) -> None:
    _, problems = check_rule_pack(pack)
    unknown = next(p for p in problems if p.code == "unknown-field")
    assert "realtime_protecton" in unknown.message and "realtime_protection" in unknown.message


def test_load_rule_pack_never_half_loads(pack: Path) -> None:
    with pytest.raises(RulePackError) as raised:
        load_rule_pack(pack)
    assert len(raised.value.problems) >= len(BAD_LINES) + 4


def test_cli_check_lists_all_problems_and_exits_1(pack: Path) -> None:
    result = CliRunner().invoke(app, ["check", str(pack)])
    assert result.exit_code == 1
    assert "rules/antivirus/bad.yaml:1: bad-uuid" in result.output
    assert "rules/fields.yaml:10: unknown-field" in result.output


def test_clean_pack_passes_with_a_summary(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD)
    result = CliRunner().invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "OK: 1 rules" in result.output
    assert len(load_rule_pack(tmp_path)) == 1


@pytest.mark.parametrize(
    ("text", "code", "line"),
    [
        ("title: [unclosed\n", "yaml-syntax", 2),
        (GOOD.replace("title: {en: Good", "title: A\ntitle: {en: Good"), "duplicate-key", 3),
        (GOOD.replace("  vi: Làm việc này.\n", "  vi: Lam viec nay.\n"), "no-diacritics", 15),
        (GOOD.replace("level: high\n", "level: high\ntags: [attack.x1562]\n"), "bad-tag", 4),
        (GOOD.replace("condition:\n", "condition:\n  absence: {for: 5m}\n"), "bad-condition", 6),
        (GOOD.replace("subject: device", "subject: site"), "bad-condition", 5),
        ("- a list\n", "schema", 1),
    ],
)
def test_single_problem_kinds(tmp_path: Path, text: str, code: str, line: int) -> None:
    write(tmp_path, "rule.yaml", text)
    _, problems = check_rule_pack(tmp_path)
    assert (code, line) in {(p.code, p.line) for p in problems}, problems


def test_bad_test_case_is_a_problem(tmp_path: Path) -> None:
    broken = GOOD_TEST.replace("status: no_av", "status: nope").replace("at: 0s", "at: soon")
    write(tmp_path, "rule.yaml", GOOD, test=broken)
    _, problems = check_rule_pack(tmp_path)
    assert {p.code for p in problems} == {"schema"} or any(p.code == "bad-test" for p in problems)
    assert all(p.file.endswith("rule.test.yaml") for p in problems)


def test_orphan_test_case_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD)
    (tmp_path / "gone.test.yaml").write_text(GOOD_TEST, encoding="utf-8")
    _, problems = check_rule_pack(tmp_path)
    assert [p.code for p in problems] == ["orphan-test"]


EXISTS_RULE = """\
id: 31111111-2222-4333-8444-555555555555
title: {en: Signature age unknown, vi: Chưa rõ tuổi chữ ký}
level: medium
status: test
subject: device
condition:
  match:
    kind: av
    where:
      - field: products[*].name
        exists: true
      - field: products[*].signature_age_hours
        exists: false
summary: {en: "signature age of {device_id} unknown", vi: "chưa rõ tuổi chữ ký của {device_id}"}
runbook:
  en: Do this.
  vi: Làm việc này.
description: {en: Why it matters., vi: Vì sao điều này quan trọng.}
"""
EXISTS_TEST = """\
steps:
  - at: 0s
    message:
      kind: av
      site: s1
      device_id: pc-1
      status: at_risk
      products: [{name: Defender, source: defender}]
  - at: 1m
    message:
      kind: av
      site: s1
      device_id: pc-1
      status: protected
      products: [{name: Defender, source: defender, signature_age_hours: 2.5}]
  - at: 2m
    message: {kind: av, site: s1, device_id: pc-2, status: no_av}
expect:
  - subject: {site: s1, device: pc-1}
    statuses: [firing, resolved]
"""


def test_exists_operator_works_in_check_test_and_the_engine(tmp_path: Path) -> None:
    """`exists:` is documented: it must pass check, run in `rules test` and in the engine."""
    write(tmp_path, "exists.yaml", EXISTS_RULE, test=EXISTS_TEST)
    checked = CliRunner().invoke(app, ["check", str(tmp_path)])
    assert checked.exit_code == 0, checked.output
    tested = CliRunner().invoke(app, ["test", str(tmp_path)])
    assert tested.exit_code == 0, tested.output
    assert "PASS" in tested.output and "Traceback" not in tested.output
    from campuswatch.collector.rules.engine import RuleEngine

    RuleEngine(load_rule_pack(tmp_path))  # the collector's start-up path


def test_duplicate_id_is_reported_even_when_a_file_has_other_problems(tmp_path: Path) -> None:
    broken = GOOD.replace("level: high\n", "level: high\ntags: [attack.x1562]\n")
    write(tmp_path, "a_first.yaml", broken)
    write(tmp_path, "b_second.yaml", GOOD)
    _, problems = check_rule_pack(tmp_path)
    codes = {(p.file.rsplit("/", 1)[-1], p.code) for p in problems}
    assert ("a_first.yaml", "bad-tag") in codes, problems
    assert ("b_second.yaml", "duplicate-id") in codes, problems


def test_check_compiles_every_rule_the_way_the_collector_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rule the engine cannot compile fails `rules check` at the rule's condition."""
    from campuswatch.collector.rules import conditions

    original = conditions._value_test

    def refuse_equals(name: str, expected: object) -> object:
        if name == "equals":
            raise ValueError("the engine refuses this clause")
        return original(name, expected)

    monkeypatch.setattr(conditions, "_value_test", refuse_equals)
    write(tmp_path, "good.yaml", GOOD)
    result = CliRunner().invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "good.yaml:6: bad-condition" in result.output
    assert "the engine refuses this clause" in result.output


def test_rules_test_reports_an_engine_error_as_a_failure_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from campuswatch.collector.rules.engine import RuleEngine

    def broken(self: RuleEngine, decoded: object) -> list[object]:
        raise ValueError("boom")

    write(tmp_path, "good.yaml", GOOD)
    monkeypatch.setattr(RuleEngine, "process", broken)
    result = CliRunner().invoke(app, ["test", str(tmp_path)])
    assert result.exit_code == 1 and result.exception is not None
    assert isinstance(result.exception, SystemExit)
    assert "FAIL" in result.output and "the engine raised ValueError: boom" in result.output


@pytest.mark.parametrize(
    ("text", "line", "wording"),
    [
        # no English title
        (GOOD.replace("{en: Good rule, vi: Quy tắc tốt}", "{vi: Quy tắc tốt}"), 2, "'en'"),
        # no Vietnamese summary
        (GOOD.replace(', vi: "x trên {device_id}"', ""), 12, "'vi'"),
        # a runbook without its Vietnamese text
        (GOOD.replace("  vi: Làm việc này.\n", ""), 13, "'vi'"),
        # a description in one language only, written the old way
        (GOOD.replace("{en: Why it matters., vi: Vì sao điều này quan trọng.}", "Why."), 16, "vi"),
        # an empty English title
        (GOOD.replace("{en: Good rule,", '{en: " ",'), 2, "'en'"),
    ],
)
def test_rules_check_fails_a_rule_missing_a_language(
    tmp_path: Path, text: str, line: int, wording: str
) -> None:
    write(tmp_path, "rule.yaml", text)
    result = CliRunner().invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1, result.output
    problem = f"{tmp_path.name}/rule.yaml:{line}: missing-language:"
    assert problem in result.output, result.output
    assert wording in result.output.split(problem)[1].splitlines()[0]
    with pytest.raises(RulePackError):
        load_rule_pack(tmp_path)


def test_every_language_of_every_text_reaches_the_check(tmp_path: Path) -> None:
    """A Vietnamese summary is checked like the English one (placeholders, diacritics)."""
    text = GOOD.replace('vi: "x trên {device_id}"', 'vi: "x trên {thiet_bi}"')
    write(tmp_path, "rule.yaml", text)
    _, problems = check_rule_pack(tmp_path)
    assert [(p.code, p.line) for p in problems] == [("bad-template", 12)]
    assert "{thiet_bi}" in problems[0].message
    plain = GOOD.replace("vi: Quy tắc tốt", "vi: Quy tac tot")
    write(tmp_path, "rule.yaml", plain)
    _, problems = check_rule_pack(tmp_path)
    assert [(p.code, p.line) for p in problems] == [("no-diacritics", 2)]
