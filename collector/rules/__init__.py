"""Security rules: a YAML rule format, its validator, the engine and the test-case runner."""

from campuswatch.collector.rules.engine import EngineLimits, RuleEngine, fingerprint
from campuswatch.collector.rules.loader import check_rule_pack, load_rule_pack
from campuswatch.collector.rules.model import Problem, Rule, RulePack, RulePackError

__all__ = [
    "EngineLimits",
    "Problem",
    "Rule",
    "RuleEngine",
    "RulePack",
    "RulePackError",
    "check_rule_pack",
    "fingerprint",
    "load_rule_pack",
]
