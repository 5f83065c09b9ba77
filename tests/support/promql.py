"""Every PromQL expression headrace ships: the dashboard's queries and the rules' exprs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from deploy.grafana import dashboard

__all__ = [
    "EXPRESSIONS",
    "GRAFANA_VARIABLES",
    "RULE_FILES",
    "dashboard_exprs",
    "rule_exprs",
    "rules",
]

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "deploy" / "prometheus").glob("*.rules.yml"))

# Grafana's range variables, as Grafana would fill them in for a 6 h dashboard.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "6h"}


def dashboard_exprs() -> list[tuple[str, str]]:
    """``(where, expr)`` of every Prometheus target of the committed dashboard."""
    data: dict[str, Any] = json.loads(dashboard.OUTPUT.read_text(encoding="utf-8"))
    found = []
    for panel in data["panels"]:
        for target in panel.get("targets", []):
            if "expr" in target:
                expr = target["expr"]
                for name, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(name, value)
                found.append((f"dashboard:{panel['title']}:{target['refId']}", expr))
    return found


def rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
    ]


def rule_exprs() -> list[tuple[str, str]]:
    """``(where, expr)`` of every recording rule and alert."""
    return [(f"rule:{r.get('alert') or r['record']}", r["expr"]) for r in rules()]


EXPRESSIONS = dashboard_exprs() + rule_exprs()
