"""Rules: the rule file schema, the built-in pack, and the stateful engine."""
