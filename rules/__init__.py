"""Rules: the rule file schema, the built-in pack, and the stateful engine."""

from rules.engine import RuleEngine
from rules.model import Rule, RuleFileError, builtin_pack, load_rules
from rules.transitions import Transition

__all__ = ["Rule", "RuleEngine", "RuleFileError", "Transition", "builtin_pack", "load_rules"]
