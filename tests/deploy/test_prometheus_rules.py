"""Prometheus rules: promtool's checks and unit tests pass, and every alert is complete.

promtool comes from Debian's prometheus package (``make sysdeps``). A missing promtool is
a failure, never a skip: these tests are the only check the rules get before a deploy.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.prometheus import find_binary

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
TEST_FILES = sorted((RULES_DIR / "tests").glob("*.yml"))
README = ROOT / "deploy" / "README.md"
SEVERITIES = {"warning", "critical"}


def _promtool(*args: str | Path) -> str:
    done = subprocess.run(
        [find_binary("promtool"), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {args[0]} failed (exit {done.returncode}):\n{output}"
    return output


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def _rules(kind: str) -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in _load(path)["groups"]
        for rule in group["rules"]
        if kind in rule
    ]


def test_the_rule_and_test_files_exist() -> None:
    assert [p.name for p in RULE_FILES] == ["alerts.rules.yml", "recording.rules.yml"]
    assert TEST_FILES


def test_promtool_check_rules() -> None:
    output = _promtool("check", "rules", *RULE_FILES)
    assert "SUCCESS" in output


def test_promtool_test_rules() -> None:
    output = _promtool("test", "rules", *TEST_FILES)
    assert "FAILED" not in output


@pytest.mark.parametrize("alert", _rules("alert"), ids=lambda rule: rule["alert"])
def test_alert_has_for_severity_and_annotations(alert: dict[str, Any]) -> None:
    assert re.fullmatch(r"\d+[smh]", alert.get("for", "")), "every alert needs a for: duration"
    assert alert["labels"]["severity"] in SEVERITIES
    annotations = alert["annotations"]
    assert annotations["summary"]
    assert annotations["description"]
    anchor = alert["alert"].lower()
    assert annotations["runbook_url"] == f"deploy/README.md#{anchor}"
    # GitHub's anchor for a `#### HeadraceFoo` heading is `headracefoo`.
    headings = re.findall(r"^#+ (\S+)\s*$", README.read_text(encoding="utf-8"), re.MULTILINE)
    assert alert["alert"] in headings, f"deploy/README.md has no runbook section for {anchor}"


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in TEST_FILES:
        for case in _load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in _rules("alert")}
    assert alerts - firing == set(), "alerts without a firing test"
    assert alerts - silent == set(), "alerts without a not-firing test"


def test_every_recording_rule_is_unit_tested() -> None:
    tested = {
        check["expr"].split("{")[0].strip()
        for path in TEST_FILES
        for case in _load(path)["tests"]
        for check in case.get("promql_expr_test", [])
    }
    used_by_alerts = " ".join(rule["expr"] for rule in _rules("alert"))
    untested = {
        rule["record"]
        for rule in _rules("record")
        if rule["record"] not in tested and rule["record"] not in used_by_alerts
    }
    assert untested == set(), "recording rules tested neither directly nor through an alert"
