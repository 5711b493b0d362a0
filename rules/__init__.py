"""Rules: the rule file schema, the built-in pack, and the stateful engine."""

from rules.engine import RuleEngine
from rules.matches import Transition
from rules.model import Rule, RuleFileError, builtin_pack, load_rules

__all__ = ["Rule", "RuleEngine", "RuleFileError", "Transition", "builtin_pack", "load_rules"]
