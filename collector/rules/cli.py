"""``campuswatch rules …``: check, test and describe a rule pack."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Security rules: validate a rule pack, run its test cases, export its JSON Schema.",
    no_args_is_help=True,
)

DirectoryArgument = Annotated[Path, typer.Argument(help="Rule pack folder (searched recursively).")]


@app.command("check")
def check(
    directory: DirectoryArgument = Path("rules"),
    no_tests: Annotated[
        bool, typer.Option("--no-tests", help="Do not require a test case per rule.")
    ] = False,
) -> None:
    """Report every problem in every rule file as file:line; exit 1 if there is any."""
    from campuswatch.collector.rules.loader import check_rule_pack

    loaded, problems = check_rule_pack(directory, require_tests=not no_tests)
    for problem in problems:
        typer.echo(str(problem))
    if problems:
        files = len({problem.file for problem in problems})
        typer.echo(f"{len(problems)} problem(s) in {files} file(s)", err=True)
        raise typer.Exit(1)
    tested = sum(1 for item in loaded if item.test_path is not None)
    typer.echo(f"OK: {len(loaded)} rules, {tested} with test cases, no problems")


@app.command("test")
def test(
    directory: DirectoryArgument = Path("rules"),
    rule: Annotated[str | None, typer.Option(help="Only the rule with this id.")] = None,
) -> None:
    """Run every rule's test case through a fresh engine; exit 1 on any failure."""
    from campuswatch.collector.rules.loader import load_rule_pack
    from campuswatch.collector.rules.model import RulePack, RulePackError
    from campuswatch.collector.rules.testing import run_pack_tests

    try:
        pack = load_rule_pack(directory)
    except RulePackError as exc:
        for problem in exc.problems:
            typer.echo(str(problem))
        typer.echo("the pack has problems: fix them first (campuswatch rules check)", err=True)
        raise typer.Exit(1) from None
    if rule is not None:
        chosen = [loaded for loaded in pack.rules if loaded.rule.id == rule]
        if not chosen:
            typer.echo(f"no rule with id {rule}", err=True)
            raise typer.Exit(2)
        pack = RulePack.of(chosen, pack.source)
    results = run_pack_tests(pack, Path(directory))
    for result in results:
        mark = "PASS" if result.passed else "FAIL"
        typer.echo(f"{mark} {result.file} — {result.title}")
        for detail in result.details:
            typer.echo(f"     {detail}")
    failed = sum(1 for result in results if not result.passed)
    typer.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        raise typer.Exit(1)


@app.command("schema")
def schema(
    output: Annotated[Path, typer.Argument(help="Where to write it.")] = Path(
        "docs/schemas/rule.schema.json"
    ),
) -> None:
    """Write the JSON Schema of the rule format (generated from the rule types)."""
    from campuswatch.collector.rules.model import rule_schema_text

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(rule_schema_text(), encoding="utf-8")
    typer.echo(str(output))
