"""Every alert kind has a Chinese and an English title in the console: the built-in rule pack and
the alerts the service raises itself (confirmed fire, building trouble, staff unreachable, the
time-series store); and every dead-letter reason the service can record has a label on the ops
page. Read from the console's own word list (``static/i18n.js``), so a new rule or reason
without console words fails here, not on a guard's or an operator's screen."""

from __future__ import annotations

import re

import pytest

from alerts.messages import TITLES
from alerts.system import SYSTEM_RULES
from ingest.payloads import REASONS
from jiayuan.console import STATIC
from rules.model import builtin_pack, load_rules

CJK = re.compile(r"[\u3400-\u9fff]")
PAIR = re.compile(r"(\w+): \"([^\"]*)\"")


def table(lang: str, name: str) -> dict[str, str]:
    """The ``name: {...}`` table of the ``ZH``/``EN`` word list."""
    text = (STATIC / "i18n.js").read_text(encoding="utf-8")
    block = text[text.index(f"const {lang} = {{") :]
    words = block[block.index(f"\n  {name}: {{") :]
    return dict(PAIR.findall(words[: words.index("\n  },")]))


def titles(lang: str) -> dict[str, str]:
    """The ``rules: {...}`` table: an alert kind's title."""
    return table(lang, "rules")


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


@pytest.mark.parametrize("lang", ["ZH", "EN"])
def test_every_dead_letter_reason_has_a_label_in_each_language(lang: str) -> None:
    """The ops page shows each reason as a word with its id beside it; a reason with no entry in
    the ``reasons: {...}`` table showed its bare id (``unknown_community``, ``too_deep``, ...)
    among the Chinese labels. ``REASONS`` is every reason a dead letter can carry."""
    labels = table(lang, "reasons")
    missing = [r for r in REASONS if not labels.get(r)]
    assert missing == [], f"{lang} has no dead-letter label for {missing}"
    wrong = [r for r in REASONS if bool(CJK.search(labels[r])) != (lang == "ZH")]
    assert wrong == [], f"{lang} labels in the other language: {wrong}"
    stale = sorted(set(labels) - set(REASONS))
    assert stale == [], f"{lang} labels reasons the service never records: {stale}"
