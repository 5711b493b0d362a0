"""The console's rules page and a wearer's usual heart rate, in a real browser (Debian's
Chromium via Playwright, the real Mosquitto and ``jiayuan run``) over nine days of a
resident's history in the journal:

- a manager reads the rules in words, lowers the heart-rate threshold from 120 to 110, runs it
  over the last week and reads per day what it would have raised beside what the rules in
  force raise — one more alert, on the day her heart rate reached 114 — at desk and phone
  width; a guard is refused the page;
- the wearer's caretaker sees, beside the heart rate of an alert, her usual at that hour; a
  guard opening the same alert does not.

Each runs once with the journal and alert store in SQLite files and once in PostgreSQL (the
``stores`` fixture): the backtest replays either journal (rules/backtest.py). Fixtures and helpers
are the console browser test's."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, expect

from devtools.broker import Broker
from devtools.launch import ServiceProcess
from devtools.receiver import Receiver
from ingest.journal import Journal
from ingest.journal_pg import PgJournal
from ingest.payloads import Reading, decode
from ingest.rollups import RollupWorker
from registry import write_registry
from tests.integration.test_console_browser import (
    CARETAKER,
    DESK,
    GUARD,
    MANAGER,
    RESIDENT,
    SHOTS,
    WAIT_MS,
    WEARABLE,
    browser,
    open_page,
    receiver,
    registry,
    set_passwords,
)
from tests.mqtt import wait_for
from tests.stores import Stores

__all__ = ["browser", "receiver"]  # the fixtures this module uses

pytestmark = pytest.mark.network

TZ = ZoneInfo("Asia/Shanghai")  # the service's default time zone
PHONE: dict[str, Any] = {
    **DESK,
    "viewport": {"width": 360, "height": 740},
    "is_mobile": True,
    "has_touch": True,
}
EPISODES = {3: 128, 2: 128, 1: 114}
"""Days before today → her heart rate from 10:00 to 10:20 that day (local time)."""


def usual(hour: int, day: int) -> int:
    return 70 + hour % 3 + day % 2


def history(data_dir: Path, stores: Stores) -> None:
    """Nine days of the resident's wearable in the journal (a reading every 10 minutes, every
    minute during the episodes), as the service would have left it: with its hourly rollups in
    SQLite; PostgreSQL's journal has none (it reads the raw readings)."""
    today = datetime.now(TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    end = time.time() - 3600
    readings: list[Reading] = []
    seq = 0

    def add(t: float, hr: int) -> None:
        nonlocal seq
        seq += 1
        body = {"ts": int(t * 1000), "seq": seq, "heart_rate": hr, "worn": True}
        r = decode(f"community/y/wearable/{WEARABLE}/telemetry", json.dumps(body).encode(), t + 1)
        assert isinstance(r, Reading), r
        readings.append(r)

    for day in range(9, 0, -1):
        start = today - timedelta(days=day)
        for minute in range(0, 24 * 60, 10):
            at = start + timedelta(minutes=minute)
            if at.timestamp() > end:
                break
            hr = usual(at.hour, day)
            if day in EPISODES and at.hour == 10 and at.minute <= 20:
                for m in range(10):  # every minute, above the level
                    add(at.timestamp() + 60 * m, EPISODES[day] if at.minute < 20 else hr)
                continue
            add(at.timestamp(), hr)
    readings.sort(key=lambda r: r.received)
    if stores.url is not None:
        pg = PgJournal(stores.url)
        try:
            pg.sync_registry(registry())
            pg.write_batch(readings, [])
        finally:
            pg.close()
        return
    journal = Journal(data_dir / "journal.db", synchronous="NORMAL")
    journal.sync_registry(registry())
    journal.write_batch(readings, [])
    journal.close()
    rollups = RollupWorker(data_dir / "journal.db")
    db = rollups.open()
    while rollups.step(db):
        pass
    db.close()


@pytest.fixture
def service(
    broker: Broker, receiver: Receiver, tmp_path: Path, stores: Stores
) -> Iterator[ServiceProcess]:
    write_registry(registry(f"json://127.0.0.1:{receiver.port}/notify"), tmp_path / "registry")
    (tmp_path / "service").mkdir()
    history(tmp_path / "service", stores)
    svc = ServiceProcess(
        tmp_path / "service", broker.port, registry=tmp_path / "registry", **stores.settings
    )
    svc.start()
    set_passwords(svc, stores, CARETAKER, GUARD, MANAGER)
    yield svc
    svc.stop()


def high_alerts(svc: ServiceProcess) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = svc.get(
        f"/api/alerts?rule_id=wearable_heart_rate_high&device_id={WEARABLE}&limit=50"
    )["items"]
    return items


def test_a_manager_tries_a_lower_heart_rate_threshold_on_last_week(
    browser: Browser, service: ServiceProcess
) -> None:
    # the service has evaluated the history on start: the rules in force raised two alerts
    wait_for(lambda: len(high_alerts(service)) >= 2, timeout=60)
    context, page, problems = open_page(browser, service, MANAGER, DESK, "#/rules")
    expect(page.locator("nav a[href='#/rules']")).to_have_text("规则", timeout=WAIT_MS)
    expect(page.locator(".rules-page h2")).to_have_text("报警规则")
    rule = page.locator("article.rule[data-rule-id=wearable_heart_rate_high]")
    # the rule in words: what it watches, how long, what clears it, whom it pages
    expect(rule.locator("h3")).to_have_text("心率持续偏高", timeout=WAIT_MS)  # as its alerts say
    expect(rule).to_contain_text("心率高于 120 bpm 持续 10 分钟")
    expect(rule).to_contain_text("回落到 110 bpm 以下时解除")
    expect(rule.locator("[data-field=pages]")).to_have_text("通知老人的照护员")
    fall = page.locator("article.rule[data-rule-id=wearable_fall]")
    expect(fall).to_contain_text("先等 30 秒：佩戴者在此期间“取消跌倒报警”就不通知")
    night = page.locator("article.rule[data-rule-id=gate_opened_at_night]")
    expect(night).to_contain_text("仅在 每天 00:00–05:00")
    expect(
        page.locator("article.rule[data-rule-id=wearable_heart_rate_above_baseline]")
    ).to_contain_text("心率比本人平时（近 14 天同一时段的中位数）高出 25 bpm 持续 15 分钟")

    # "if the threshold were 110, how many alerts a day last week, compared with what we got?"
    rule.locator("[data-act=try-rule]").click()
    trial = page.locator("[data-field=trial]")
    expect(trial.locator("select[name=rule]")).to_have_value("wearable_heart_rate_high")
    expect(trial.locator("input[name=above]")).to_have_value("120")
    trial.locator("input[name=above]").fill("110")
    trial.locator("input[name=clear]").fill("105")
    trial.locator("[data-act=run-trial]").click()
    sentence = trial.locator(
        ".trial-rule[data-rule-id=wearable_heart_rate_high] [data-field=trial-sentence]"
    )
    expect(sentence).to_contain_text("改后共报警 3 次，现行规则 2 次：多 1 次。", timeout=60_000)
    # what the store really raised in those days: none — this service first read her history
    # today (its two alerts were raised today, out of the week tried)
    expect(sentence).to_contain_text("这段时间实际报警 0 次。")
    expect(trial.locator("[data-field=trial-range]")).to_contain_text("（7 天）")
    rows = trial.locator(".trial-rule[data-rule-id=wearable_heart_rate_high] tbody tr")
    expect(rows).to_have_count(7)
    today = datetime.now(TZ).date()
    for day, then in EPISODES.items():
        row = trial.locator(f"tr[data-day='{today - timedelta(days=day)}']")
        now_count = "1" if then > 120 else "0"
        expect(row.locator("[data-col=now]")).to_have_text(now_count)
        expect(row.locator("[data-col=tried]")).to_have_text("1")
        expect(row.locator("[data-col=diff]")).to_have_text("+1" if now_count == "0" else "0")
        expect(row.locator("[data-col=actual]")).to_have_text("0")
    quiet = trial.locator(f"tr[data-day='{today - timedelta(days=5)}']")
    expect(quiet.locator("[data-col=diff]")).to_have_text("0")
    # in the order a manager reads it: the sentence, then the days, earliest first
    days = rows.evaluate_all("rows => rows.map(r => r.dataset.day)")
    assert days == sorted(days) and days[-1] == str(today - timedelta(days=1)), days
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=SHOTS / "desk-manager-rules-trial.png", full_page=True)
    page.locator("[data-ctl=lang]").click()
    expect(page.locator("article.rule[data-rule-id=wearable_heart_rate_high]")).to_contain_text(
        "Heart rate above 120 bpm for 10 min", timeout=WAIT_MS
    )
    assert problems.items == []
    context.close()

    # on a 360-px phone: the same answer, and the page fits its width
    context, page, problems = open_page(browser, service, MANAGER, PHONE, "#/rules")
    rule = page.locator("article.rule[data-rule-id=wearable_heart_rate_high]")
    rule.locator("[data-act=try-rule]").click()
    trial = page.locator("[data-field=trial]")
    trial.locator("input[name=above]").fill("110")
    trial.locator("input[name=clear]").fill("105")
    trial.locator("[data-act=run-trial]").click()
    expect(trial.locator("[data-field=trial-sentence]").first).to_contain_text(
        "多 1 次", timeout=60_000
    )
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the rules page overflows a phone: {width}"
    trial.locator("[data-field=trial-result]").screenshot(
        path=SHOTS / "phone-manager-rules-trial.png"
    )
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=SHOTS / "phone-manager-rules.png")  # the page's top: the trial asked
    page.evaluate("window.scrollTo(0, document.querySelector('article.rule').offsetTop - 90)")
    page.screenshot(path=SHOTS / "phone-manager-rules-list.png")
    assert problems.items == []
    context.close()

    # a guard is not offered the page, and opening it says no without asking the API
    context, page, problems = open_page(browser, service, GUARD, DESK, "#/rules")
    expect(page.locator("[data-field=page-refused]")).to_have_text(
        "您的角色不能查看此页面", timeout=WAIT_MS
    )
    expect(page.locator("nav a[href='#/rules']")).to_have_count(0)
    expect(page.locator("article.rule")).to_have_count(0)
    assert problems.items == []
    context.close()


def test_the_caretaker_sees_her_usual_beside_the_reading_and_a_guard_does_not(
    browser: Browser, service: ServiceProcess
) -> None:
    wait_for(lambda: len(high_alerts(service)) >= 2, timeout=60)
    alert = min(high_alerts(service), key=lambda a: str(a["started_at"]))
    started = datetime.fromisoformat(alert["started_at"]).astimezone(TZ)
    context, page, problems = open_page(
        browser, service, CARETAKER, DESK, f"#/alerts/{alert['id']}"
    )
    expect(page.locator(".alert-head h2")).to_contain_text("心率持续偏高", timeout=WAIT_MS)
    line = page.locator("[data-field=baseline]")
    expect(line).to_contain_text(f"本人平时 {started.hour:02d}:00 前后的心率：", timeout=WAIT_MS)
    expect(line).to_contain_text(re.compile(r"7[0-3] ± \d+ bpm"))  # 70-73 bpm, not the 128
    expect(line.locator("[data-field=reading]")).to_contain_text("报警时 128 bpm")
    page.screenshot(path=SHOTS / "desk-caretaker-usual-heart-rate.png", full_page=True)
    # her own page: her usual beside the latest heart rate
    page.goto(service.url + f"/#/residents/{RESIDENT}")
    expect(page.locator("[data-field=baseline]")).to_contain_text("本人平时", timeout=WAIT_MS)
    assert problems.items == []
    context.close()

    # the duty manager reads the same alert: the reading, not her usual
    context, page, problems = open_page(browser, service, MANAGER, DESK, f"#/alerts/{alert['id']}")
    expect(page.locator(".alert-head h2")).to_contain_text("心率", timeout=WAIT_MS)
    expect(page.locator(".loading")).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator("[data-field=baseline]")).to_have_count(0)
    assert "本人平时" not in page.locator("main").inner_text()
    # the page's own request for her readings is refused (health data), nothing else fails
    assert all("403" in p and "/readings" in p for p in problems.items), problems.items
    context.close()

    # a guard: neither her alert nor her wearable is the guard's to see, nor her usual
    context, page, problems = open_page(browser, service, GUARD, DESK, f"#/alerts/{alert['id']}")
    expect(page.locator("main [role=alert]")).to_contain_text("not found", timeout=WAIT_MS)
    expect(page.locator("[data-field=baseline]")).to_have_count(0)
    page.goto(service.url + f"/#/devices/{WEARABLE}")
    expect(page.locator("main [role=alert]")).to_contain_text("not found", timeout=WAIT_MS)
    expect(page.locator("[data-field=baseline]")).to_have_count(0)
    assert "本人平时" not in page.locator("main").inner_text()
    page.screenshot(path=SHOTS / "desk-guard-wearable.png", full_page=True)
    context.close()
    guard = service.token_for(GUARD)
    refused = service.get(
        f"/api/devices/{WEARABLE}/baseline?metric=heart_rate", (403, 404), token=guard
    )
    assert "median" not in json.dumps(refused), refused
