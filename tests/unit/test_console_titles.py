"""Every alert kind has a Chinese and an English title in the console: the built-in rule pack and
the alerts the service raises itself (confirmed fire, building trouble, staff unreachable, the
time-series store). Read from the console's own word list (``static/i18n.js``), so a new rule
without console titles fails here, not on a guard's screen."""

from __future__ import annotations

import re

import pytest

from alerts.system import SYSTEM_RULES
from jiayuan.console import STATIC
from rules.model import builtin_pack, load_rules

CJK = re.compile(r"[\u3400-\u9fff]")
PAIR = re.compile(r"(\w+): \"([^\"]*)\"")


def titles(lang: str) -> dict[str, str]:
    """The ``rules: {...}`` table of the ``ZH``/``EN`` word list."""
    text = (STATIC / "i18n.js").read_text(encoding="utf-8")
    block = text[text.index(f"const {lang} = {{") :]
    rules = block[block.index("\n  rules: {") :]
    return dict(PAIR.findall(rules[: rules.index("\n  },")]))


KINDS = sorted({r.id for r in load_rules([builtin_pack()])} | set(SYSTEM_RULES))


@pytest.mark.parametrize("lang", ["ZH", "EN"])
def test_every_rule_and_system_alert_has_a_title_in_each_language(lang: str) -> None:
    table = titles(lang)
    missing = [k for k in KINDS if not table.get(k)]
    assert missing == [], f"{lang} has no title for {missing}"
    wrong = [k for k in KINDS if bool(CJK.search(table[k])) != (lang == "ZH")]
    assert wrong == [], f"{lang} titles in the other language: {wrong}"
