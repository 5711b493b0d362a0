"""What staff read: short notification texts in Chinese (the default) or English.

A message says where (compound, building, unit), what (the rule's summary), since when, why this
person gets it now (first notice, a later step, a repeat, a follow-up), and links to the alert in
the console. It never carries a measured value (a health value) or a name: the alert's labels
hold places and pseudonymous ids only, and ``Alert.value`` is never read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal
from zoneinfo import ZoneInfo

from alerts.model import Alert
from alerts.system import SYSTEM_RULES

Language = Literal["zh", "en"]
Purpose = Literal["notify", "escalate", "repeat", "update"]

SUMMARIES_ZH: Final[dict[str, str]] = {
    "wearable_fall": "跌倒报警",
    "wearable_sos": "紧急呼叫（SOS）",
    "wearable_heart_rate_high": "心率持续偏高10分钟",
    "wearable_heart_rate_low": "心率持续偏低10分钟",
    "wearable_spo2_low": "血氧持续偏低5分钟",
    "wearable_removed": "手环已摘下",
    "wearable_silent": "手环30分钟无信号",
    "wearable_low_battery": "手环电量低",
    "wearable_outside_area": "老人离开安全区域",
    "wearable_heart_rate_above_baseline": "心率高于本人平时水平",
    "wearable_heart_rate_high_at_rest": "静止时心率偏高",
    "gate_opened_at_night": "夜间楼门被打开",
    "smoke_alarm": "烟雾报警",
    "smoke_co_high": "一氧化碳浓度高",
    "smoke_fault": "烟感故障",
    "smoke_tamper": "烟感被拆动",
    "smoke_low_battery": "烟感电量低",
    "smoke_battery_level_low": "烟感电池电量低",
    "smoke_silent": "烟感2小时无信号",
    "gate_forced": "门禁被强行打开",
    "gate_held_open": "门禁长时间未关",
    "gate_denied_repeated": "门禁多次拒绝通行",
    "gate_tamper": "门禁读卡器被拆动",
    "fire_confirmed": "火警确认：同户或同层两个烟感报警",
    "building_trouble": "楼内多个设备同时故障（可能停电或断网）",
    "staff_unreachable": "值班人员所有通知渠道均无法送达",
    "nobody_reached": "报警无人可通知：无人值班",
    "timeseries_store_unreachable": "时序数据库无法写入，读数暂存日志",
}
"""Chinese summaries of the built-in rules and of the alerts this package raises itself; other
rules show their own summary."""

TITLES: Final[dict[str, tuple[str, str]]] = {
    "wearable_fall": ("跌倒报警", "Fall detected"),
    "wearable_sos": ("紧急呼叫（SOS）", "SOS call"),
    "wearable_heart_rate_high": ("心率持续偏高", "Heart rate high"),
    "wearable_heart_rate_low": ("心率持续偏低", "Heart rate low"),
    "wearable_spo2_low": ("血氧持续偏低", "Blood oxygen low"),
    "wearable_removed": ("手环已摘下", "Wearable taken off"),
    "wearable_silent": ("手环无信号", "Wearable silent"),
    "wearable_low_battery": ("手环电量低", "Wearable battery low"),
    "wearable_outside_area": ("老人离开安全区域", "Resident outside their area"),
    "wearable_heart_rate_above_baseline": ("心率高于平时", "Heart rate high for this resident"),
    "wearable_heart_rate_high_at_rest": ("静止时心率偏高", "Heart rate high at rest"),
    "gate_opened_at_night": ("夜间楼门被打开", "Building door opened at night"),
    "smoke_alarm": ("烟雾报警", "Smoke alarm"),
    "smoke_co_high": ("一氧化碳浓度高", "Carbon monoxide high"),
    "smoke_fault": ("烟感故障", "Smoke detector fault"),
    "smoke_tamper": ("烟感被拆动", "Smoke detector tampered with"),
    "smoke_low_battery": ("烟感电量低", "Smoke detector battery low"),
    "smoke_battery_level_low": ("烟感电池电量低", "Smoke detector battery level low"),
    "smoke_silent": ("烟感无信号", "Smoke detector silent"),
    "gate_forced": ("门禁被强行打开", "Gate forced open"),
    "gate_held_open": ("门禁长时间未关", "Gate held open"),
    "gate_denied_repeated": ("门禁多次拒绝通行", "Gate: repeated denied entries"),
    "gate_tamper": ("门禁读卡器被拆动", "Gate reader tampered with"),
    "fire_confirmed": ("火警确认", "Fire confirmed"),
    "building_trouble": ("楼内多个设备同时故障", "Many devices of one building in trouble"),
    "staff_unreachable": ("值班人员无法联系", "Staff member unreachable"),
    "nobody_reached": ("报警无人接收", "Alerts reached nobody"),
    "timeseries_store_unreachable": ("时序数据库无法写入", "Time-series store unreachable"),
}
"""A short title of every alert kind (rule id) in Chinese and English: the console's headline."""

SYSTEM_ALERTS: Final[dict[str, tuple[str, str, str, str]]] = {
    r.id: (r.kind, r.severity, r.signal, r.route) for r in SYSTEM_RULES.values()
}
"""Alerts jiayuan raises itself (no rule file): rule id → (kind, severity, signal, route)."""


def title(rule_id: str, language: Language, fallback: str = "") -> str:
    """The title of an alert kind; an unknown rule (a community's own) shows its summary."""
    pair = TITLES.get(rule_id)
    if pair is None:
        return fallback or rule_id
    return pair[0] if language == "zh" else pair[1]


SEVERITY: Final[dict[Language, dict[str, str]]] = {
    "zh": {"critical": "紧急", "major": "重要", "minor": "一般", "warning": "提示", "info": "信息"},
    "en": {"critical": "CRITICAL", "major": "MAJOR", "minor": "MINOR", "warning": "WARNING",
           "info": "INFO"},
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    body: str


@dataclass(frozen=True, slots=True)
class Context:
    """Why this message is sent now."""

    purpose: Purpose = "notify"
    step: int = 0
    """The chain step (0 = first notice)."""
    steps: int = 1
    waited_s: float = 0.0
    """How long the alert has gone unacknowledged (escalations and repeats)."""
    by: str | None = None
    """Who acknowledged or resolved it (updates): a staff id, or ``rule``."""
    status: str | None = None
    """The alert's new status (updates)."""
    reason: str = ""
    """Why this person (shown in the console, not in the message)."""


def summary(alert: Alert, language: Language) -> str:
    if language == "zh":
        text = SUMMARIES_ZH.get(alert.rule_id, alert.summary)
        if alert.labels.get("correlated") == "smoke_alarm":
            text += "（家中烟雾报警）"
        return text
    return alert.summary


def where(alert: Alert, language: Language) -> str:
    if alert.kind == "staff":
        return f"值班人员 {alert.device_id}" if language == "zh" else f"staff {alert.device_id}"
    lb = alert.labels
    compound, building, unit = lb.get("compound"), lb.get("building"), lb.get("unit")
    floor = lb.get("floor")
    parts: list[str] = []
    if language == "zh":
        if compound:
            parts.append(f"{compound}小区")
        if building:
            parts.append(f"{building}楼")
        if unit:
            parts.append(f"{unit}室")
        elif floor:
            parts.append(f"{floor}层")
        if not parts:
            parts.append(f"设备 {alert.device_id}")
        return " ".join(parts)
    if compound:
        parts.append(f"compound {compound}")
    if building:
        parts.append(f"building {building}")
    if unit:
        parts.append(f"unit {unit}")
    elif floor:
        parts.append(f"floor {floor}")
    return ", ".join(parts) or f"device {alert.device_id}"


def render(
    alert: Alert, language: Language, base_url: str, tz: ZoneInfo, ctx: Context | None = None
) -> Message:
    """The title and body of one message about ``alert``."""
    c = ctx or Context()
    zh = language == "zh"
    level = SEVERITY[language].get(alert.severity, alert.severity)
    what = summary(alert, language)
    since = datetime.fromtimestamp(alert.started_at, tz).strftime("%m-%d %H:%M")
    link = f"{base_url.rstrip('/')}/#/alerts/{alert.id}"
    minutes = max(1, round(c.waited_s / 60))
    if c.purpose == "update":
        status = _status(c.status or alert.status, language)
        title = f"【{status}】{what}" if zh else f"[{status}] {what}"
        by = c.by or "?"
        who = ("规则自动解除" if zh else "cleared by its rule") if by == "rule" else by
        line = f"处理人：{who}" if zh else f"By: {who}"
        lines = [
            f"位置：{where(alert, language)}" if zh else f"Where: {where(alert, language)}",
            line,
        ]
    else:
        tag = {
            "notify": "",
            "escalate": "升级 " if zh else "ESCALATED ",
            "repeat": "再次提醒 " if zh else "REMINDER ",
        }[c.purpose]
        title = f"【{tag}{level}】{what}" if zh else f"[{tag}{level}] {what}"
        if zh:
            lines = [f"位置：{where(alert, language)}", f"开始：{since}"]
            if c.purpose == "escalate":
                lines.append(f"已{minutes}分钟无人确认，升级通知（第{c.step + 1}/{c.steps}级）")
            elif c.purpose == "repeat":
                lines.append(f"已{minutes}分钟无人确认，请尽快处理")
            if alert.labels.get("flapping") == "true":
                lines.append("该报警反复触发，已合并")
        else:
            lines = [f"Where: {where(alert, language)}", f"Since: {since} ({_tz_name(tz)})"]
            if c.purpose == "escalate":
                lines.append(
                    f"Not acknowledged for {minutes} min: escalated "
                    f"(step {c.step + 1} of {c.steps})"
                )
            elif c.purpose == "repeat":
                lines.append(f"Still not acknowledged after {minutes} min")
            if alert.labels.get("flapping") == "true":
                lines.append("Flapping: repeated toggles merged into this alert")
    lines.append(f"查看/确认：{link}" if zh else f"Open: {link}")
    return Message(title, "\n".join(lines))


def resident_in_fire(alert: Alert, language: Language, base_url: str) -> Message:
    """To those paged about a fire (the guards, the fire chain): a resident's alert in a home
    with a smoke alarm — someone to look for in the fire. Place and kind only: no name, no
    value (the resident's caretakers are paged the alert itself)."""
    what = title(alert.rule_id, language, alert.summary)
    place = where(alert, language)
    link = f"{base_url.rstrip('/')}/#/alerts/{alert.id}"
    if language == "zh":
        return Message(
            f"【紧急】住户在家中：{what} · {place}",
            f"位置：{place}\n火警中该户有住户需要救助，请告知进入人员\n查看：{link}",
        )
    return Message(
        f"[CRITICAL] Resident at home: {what} · {place}",
        f"Where: {place}\nSomeone to look for in the fire\nOpen: {link}",
    )


def _status(status: str, language: Language) -> str:
    if language == "zh":
        return {"acknowledged": "已确认", "resolved": "已解除"}.get(status, status)
    return {"acknowledged": "ACKNOWLEDGED", "resolved": "RESOLVED"}.get(status, status.upper())


def _tz_name(tz: ZoneInfo) -> str:
    return datetime.now(tz).tzname() or tz.key
