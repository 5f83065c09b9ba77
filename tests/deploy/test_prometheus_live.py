"""The dashboard's and the rules' PromQL on a real Prometheus, and a real Pushgateway.

Debian's ``prometheus`` and ``prometheus-pushgateway`` run as throwaway processes
(testbed/prometheus.py); a missing binary fails these tests, it never skips them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway
from support.promql import EXPRESSIONS, RULE_FILES, rules

from testbed.prometheus import PrometheusServer, Pushgateway, ScrapeJob


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A Prometheus with headrace's rules loaded and nothing to scrape."""
    with PrometheusServer(
        tmp_path_factory.mktemp("prometheus"), rule_files=RULE_FILES, scrape_interval_s=0.5
    ) as server:
        yield server


def test_a_pushed_sample_is_scraped_from_the_pushgateway(tmp_path: Path) -> None:
    with (
        Pushgateway(tmp_path / "pushgateway") as gateway,
        PrometheusServer(
            tmp_path / "prometheus",
            scrape=[ScrapeJob("pushgateway", [gateway.address], honor_labels=True)],
            scrape_interval_s=0.5,
        ) as prometheus,
    ):
        registry = CollectorRegistry()
        progress = Gauge(
            "headrace_producer_progress_ratio", "bytes read / size", ["table"], registry=registry
        )
        progress.labels(table="observations").set(0.25)
        push_to_gateway(
            gateway.address,
            job="headrace-producer",
            registry=registry,
            grouping_key={"table": "observations"},
        )

        result = prometheus.wait_for(
            'headrace_producer_progress_ratio{job="headrace-producer", table="observations"}',
            lambda result: bool(result),
        )

    assert len(result) == 1
    assert float(result[0]["value"][1]) == 0.25


def test_every_rule_loads_and_evaluates_healthy(prometheus: PrometheusServer) -> None:
    expected = {r.get("alert") or r["record"] for r in rules()}

    def loaded_and_evaluated() -> bool:
        rules = [rule for group in prometheus.rule_groups() for rule in group["rules"]]
        return {r["name"] for r in rules} == expected and all(
            r["health"] != "unknown" for r in rules
        )

    prometheus.wait_until(loaded_and_evaluated, "every rule loaded and evaluated once")

    unhealthy = {
        rule["name"]: rule.get("lastError")
        for group in prometheus.rule_groups()
        for rule in group["rules"]
        if rule["health"] != "ok"
    }
    assert unhealthy == {}


@pytest.mark.parametrize(("where", "expr"), EXPRESSIONS, ids=[w for w, _ in EXPRESSIONS])
def test_promql_parses_and_evaluates(prometheus: PrometheusServer, where: str, expr: str) -> None:
    # Only that Prometheus accepts the expression: with nothing scraped most return no data.
    # That each returns data from a real worker and producer is test_pipeline_observed.py.
    prometheus.query(expr)  # raises PrometheusError on a parse or evaluation error
