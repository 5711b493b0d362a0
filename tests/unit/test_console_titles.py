"""Every alert kind has a Chinese and an English title in the console: the built-in rule pack and
the alerts the service raises itself (confirmed fire, building trouble, staff unreachable, the
time-series store). Read from the console's own word list (``static/i18n.js``), so a new rule
without console titles fails here, not on a guard's screen."""

from __future__ import annotations

import re

import pytest

from alerts.messages import TITLES
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


@pytest.mark.parametrize(("lang", "i"), [("ZH", 0), ("EN", 1)])
def test_the_console_names_an_alert_as_its_notification_and_detail_do(lang: str, i: int) -> None:
    """The console's word for a rule is only its fallback (an alert normally carries
    ``title_zh``/``title_en``), so a guard who reads 门禁被强行打开 on the phone must find the same
    words on the board — one vocabulary, checked here (they had drifted: 心率持续过高 on the
    console, 心率持续偏高 in the page)."""
    table = titles(lang)
    differ = {k: (table[k], t[i]) for k, t in TITLES.items() if k in table and table[k] != t[i]}
    assert differ == {}, f"{lang} console words differ from alerts.messages.TITLES: {differ}"
