"""Rule files: schema validation, and errors that name the file, the rule and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rules.check import check_files, main
from rules.model import (
    AbsenceRule,
    CountRule,
    EventRule,
    RuleFileError,
    ThresholdRule,
    ZoneRule,
    builtin_pack,
    load_rules,
    parse_duration,
)

BASE: dict[str, Any] = {
    "severity": "major",
    "signal": "alarm",
    "route": "caretaker",
    "summary": "Test rule",
}
HR_HIGH: dict[str, Any] = {
    **BASE,
    "id": "hr_high",
    "kind": "wearable",
    "type": "threshold",
    "metric": "heart_rate",
    "above": 120,
    "clear": 110,
    "for": "10m",
}


def write(tmp_path: Path, rules: list[dict[str, Any]], name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"rules": rules}, sort_keys=False), encoding="utf-8")
    return path


def errors_of(*paths: Path) -> list[str]:
    with pytest.raises(RuleFileError) as exc:
        load_rules(paths)
    assert str(exc.value) == "\n".join(exc.value.errors)
    return exc.value.errors


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("1.5h", 5400),
     ("0", 0), (0, 0), (90, 90), (2.5, 2.5)],
)  # fmt: skip
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["ten minutes", "10", "10 m", "m", "", "-5s", -1, True, None, float("inf"), "1m30"]
)
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_every_type_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            HR_HIGH,
            {**BASE, "id": "fall", "kind": "wearable", "type": "event", "events": ["fall"]},
            {**BASE, "id": "alarm", "kind": "smoke", "type": "event", "events": ["alarm"],
             "clear_events": ["alarm_clear"]},
            {**BASE, "id": "silent", "kind": "smoke", "type": "absence", "for": "2h",
             "streams": ["telemetry", "event"]},
            {**BASE, "id": "denied", "kind": "gate", "type": "count", "event": "denied",
             "threshold": 5, "window": "2m"},
            {**BASE, "id": "zone", "kind": "wearable", "type": "zone", "for": "2m"},
        ],
    )  # fmt: skip
    hr, fall, alarm, silent, denied, zone = load_rules([path])
    assert isinstance(hr, ThresholdRule) and hr.for_ == 600 and hr.above == 120 and hr.enabled
    assert hr.gap == 600 and hr.model_copy(update={"max_gap": 60.0}).gap == 60
    assert isinstance(fall, EventRule) and fall.clear_events == ()
    assert isinstance(alarm, EventRule) and alarm.clear_events == ("alarm_clear",)
    assert isinstance(silent, AbsenceRule) and silent.for_ == 7200
    assert silent.streams == ("telemetry", "event")
    assert isinstance(denied, CountRule) and denied.window == 120 and denied.threshold == 5
    assert isinstance(zone, ZoneRule) and zone.for_ == 120 and zone.margin_m == 25


def test_error_names_file_rule_and_field(tmp_path: Path) -> None:
    fall = {**BASE, "id": "fall", "kind": "wearable", "type": "event", "events": ["fall"]}
    path = write(tmp_path, [{**HR_HIGH, "id": "other"}, fall, {**HR_HIGH, "for": "ten minutes"}])
    assert errors_of(path) == [
        f"{path}: rule 'hr_high' (#3): field 'for': invalid duration 'ten minutes' "
        "(use e.g. 30s, 10m, 2h, 1h30m)"
    ]


def test_all_errors_of_a_file_are_collected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {**HR_HIGH, "metric": "pulse", "severity": "urgent"},
            {k: v for k, v in HR_HIGH.items() if k != "id"},
            {**BASE, "id": "ev", "kind": "wearable", "type": "event", "events": ["fal"],
             "colour": "red"},
        ],
    )  # fmt: skip
    errors = errors_of(path)
    assert len(errors) == 5
    assert errors[0].startswith(f"{path}: rule 'hr_high' (#1): field 'severity': Input should be")
    assert errors[0].endswith("got 'urgent'")
    assert errors[1].startswith(f"{path}: rule 'hr_high' (#1): field 'metric': unknown metric")
    assert errors[2] == f"{path}: rule #2: field 'id': required"
    rest = sorted(errors[3:])
    assert rest[0].startswith(
        f"{path}: rule 'ev' (#3): field 'colour': unknown field (allowed: id,"
    )
    assert rest[1].startswith(f"{path}: rule 'ev' (#3): field 'events': unknown event 'fal'")


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"metric": "steps_per_day"}, "metric", "unknown metric 'steps_per_day' for wearable"),
        ({"metric": "worn"}, "metric", "unknown metric 'worn'"),  # a boolean is no level
        ({"kind": "gate"}, "metric", "unknown metric 'heart_rate' for gate (known: none)"),
        ({"below": 40}, "below", "give exactly one of 'above' or 'below'"),
        ({"above": None}, "below", "give exactly one of 'above' or 'below'"),
        ({"clear": 125}, "clear", "clear level 125 must be at or below the trigger (above 120)"),
        ({"for": "-1m"}, "for", "invalid duration '-1m'"),
        ({"route": "police"}, "route", "Input should be"),
        ({"id": "has space"}, "id", "String should match pattern"),
        ({"summary": ""}, "summary", "String should have at least 1 character"),
        ({"type": "ratio"}, "type", "unknown type 'ratio' (one of threshold, event"),
        ({"for_": 3}, "for_", "unknown field (allowed: id, kind,"),
    ],
)
def test_threshold_errors(tmp_path: Path, change: dict[str, Any], field: str, message: str) -> None:
    rule = {k: v for k, v in {**HR_HIGH, **change}.items() if v is not None}
    rid = rule["id"]
    (error,) = errors_of(write(tmp_path, [rule]))
    assert error.startswith(f"{tmp_path / 'x.yaml'}: rule {rid!r} (#1): field '{field}': {message}")


def test_below_clear_must_be_above_trigger(tmp_path: Path) -> None:
    rule = {**HR_HIGH, "above": None, "below": 45, "clear": 40}
    (error,) = errors_of(write(tmp_path, [{k: v for k, v in rule.items() if v is not None}]))
    assert error.endswith(
        "field 'clear': clear level 40 must be at or above the trigger (below 45)"
    )


def test_missing_type(tmp_path: Path) -> None:
    (error,) = errors_of(write(tmp_path, [{k: v for k, v in HR_HIGH.items() if k != "type"}]))
    assert error.endswith("rule 'hr_high' (#1): field 'type': required (one of threshold, event, "
                          "absence, count, zone, all, any)")  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "field", "message"),
    [
        ({"kind": "wearable", "type": "event", "events": ["alarm"]}, "events",
         "unknown event 'alarm' for wearable (known: fall, fall_cancelled, low_battery, removed,"
         " sos, worn)"),
        ({"kind": "wearable", "type": "event", "events": []}, "events", "at least 1 item"),
        ({"kind": "smoke", "type": "event", "events": ["alarm"], "clear_events": ["alarm"]},
         "clear_events", "'alarm' both fires and clears"),
        ({"kind": "smoke", "type": "event", "events": ["alarm"], "clear_events": ["closed"]},
         "clear_events", "unknown event 'closed' for smoke"),
        ({"kind": "gate", "type": "count", "event": "denied", "threshold": 0, "window": "2m"},
         "threshold", "greater than or equal to 1"),
        ({"kind": "gate", "type": "count", "event": "opened", "threshold": 3, "window": "2m"},
         "event", "unknown event 'opened' for gate"),
        ({"kind": "gate", "type": "count", "event": "denied", "threshold": 3, "window": 0},
         "window", "greater than 0"),
        ({"kind": "smoke", "type": "absence"}, "for", "required"),
        ({"kind": "smoke", "type": "absence", "for": "1h", "streams": ["log"]}, "streams[0]",
         "Input should be"),
        ({"kind": "smoke", "type": "zone"}, "kind", "zone rules apply to wearables only"),
        ({"kind": "smoke", "type": "absence", "for": "1h", "streams": []}, "streams",
         "give at least one stream"),
    ],
)  # fmt: skip
def test_type_errors(tmp_path: Path, rule: dict[str, Any], field: str, message: str) -> None:
    (error,) = errors_of(write(tmp_path, [{**BASE, "id": "r1", **rule}]))
    prefix = f"{tmp_path / 'x.yaml'}: rule 'r1' (#1): field '{field}': "
    assert error.startswith(prefix)
    assert message in error


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    a = write(tmp_path, [HR_HIGH], "a.yaml")
    b = write(tmp_path, [{**HR_HIGH, "id": "ok"}, HR_HIGH], "b.yaml")
    assert errors_of(a, b) == [
        f"{b}: rule 'hr_high' (#2): field 'id': duplicate id, first defined in {a} (#1)"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [\n  {id: x\n", "line 3, column 1: invalid YAML"),
        ("rules:\n  - id: a\n    id: b\n", "line 3, column 5: invalid YAML: duplicate key 'id'"),
        ("", "expected a mapping with a 'rules' list"),
        ("- id: x\n", "expected a mapping with a 'rules' list"),
        ("rule: []\n", "expected a mapping with a 'rules' list"),
        ("rules: []\nversion: 2\n", "field 'version': unknown top-level field (allowed: rules)"),
    ],
)
def test_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    (error,) = errors_of(path)
    assert error.startswith(f"{path}: {message}")


def test_missing_file(tmp_path: Path) -> None:
    (error,) = errors_of(tmp_path / "nope.yaml")
    assert error.startswith(f"{tmp_path / 'nope.yaml'}: cannot read:")


def test_check_files_and_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, [HR_HIGH, {**HR_HIGH, "id": "hr2"}], "good.yaml")
    bad = write(tmp_path, [{**HR_HIGH, "id": "hr3", "for": "soon"}, {**HR_HIGH, "id": "hr4"}],
                "bad.yaml")  # fmt: skip
    assert check_files([good]) == (2, [])
    count, errors = check_files([good, bad])
    assert count == 3 and len(errors) == 1 and "rule 'hr3' (#1): field 'for'" in errors[0]

    assert main([str(good)]) == 0
    out = capsys.readouterr()
    assert out.out == f"OK: 2 rules in {good}\n" and out.err == ""
    assert main([str(good), str(bad)]) == 1
    out = capsys.readouterr()
    assert out.out == f"OK: 2 rules in {good}\n"
    assert errors[0] in out.err and "1 error(s) in 1 file(s)" in out.err


def test_main_defaults_to_the_builtin_pack(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert capsys.readouterr().out.startswith("OK: ")
    assert builtin_pack().name == "community.yaml" and builtin_pack().is_file()


def test_models_are_strict_and_frozen() -> None:
    rule = ThresholdRule.model_validate({k: v for k, v in HR_HIGH.items()})
    with pytest.raises(ValueError):
        rule.model_copy().__setattr__("above", 1)
    assert rule.model_dump(by_alias=True)["for"] == 600
