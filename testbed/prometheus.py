"""A throwaway ``prometheus`` and ``prometheus-pushgateway`` for tests.

Each server is one child process of Debian's binary (``scripts/ensure-system-deps.sh
--with-prometheus`` installs them) with everything (config, TSDB, log) in a directory the
caller hands in, listening on a free port on 127.0.0.1. Nothing under ``/etc/prometheus``
is read and the system services are never touched. :meth:`start` returns once ``/-/ready``
answers 200, polling with a deadline; :meth:`stop` sends SIGTERM and waits.

    with Pushgateway(tmp_path / "pgw") as pgw, PrometheusServer(
        tmp_path / "prom", scrape=[ScrapeJob("pushgateway", [pgw.address], honor_labels=True)]
    ) as prom:
        prom.wait_for("some_metric", lambda result: bool(result))
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from testbed.servers import HOST, find_executable, pick_port, spawn_server, tail

__all__ = [
    "PrometheusError",
    "PrometheusServer",
    "Pushgateway",
    "ScrapeJob",
    "find_binary",
]

DEFAULT_START_TIMEOUT_S = 30.0
DEFAULT_STOP_TIMEOUT_S = 15.0
_POLL_INTERVAL_S = 0.1
_START_ATTEMPTS = 5
_HTTP_TIMEOUT_S = 5.0
_INSTALL_HINT = (
    "Run `make sysdeps` (scripts/ensure-system-deps.sh --with-prometheus installs the Debian "
    "prometheus and prometheus-pushgateway packages) or: apt-get install prometheus "
    "prometheus-pushgateway."
)


class PrometheusError(RuntimeError):
    """A server did not start, or the HTTP API answered with an error."""


def find_binary(name: str) -> str:
    """Path of ``promtool``, ``prometheus`` or ``prometheus-pushgateway``, or raise.

    Raises rather than skips: the suite's observability tests must run wherever it runs.
    """
    found = find_executable(name)
    if found is None:
        raise PrometheusError(
            f"{name} not found in PATH, /usr/sbin or /usr/libexec. {_INSTALL_HINT}"
        )
    return found


def _http(url: str, *, data: bytes | None = None, timeout_s: float = _HTTP_TIMEOUT_S) -> Any:
    """GET (or POST ``data``) and decode the JSON answer; API errors keep their JSON body."""
    request = urllib.request.Request(url, data=data)
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return json.loads(body)
        except ValueError:
            raise PrometheusError(f"{url}: HTTP {exc.code}: {body[:500]!r}") from exc


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class _Server:
    """One child process serving HTTP on 127.0.0.1:port with a ``/-/ready`` endpoint."""

    binary_name = ""

    def __init__(self, base_dir: Path | str, *, start_timeout_s: float) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.log_path = self.base_dir / f"{self.binary_name}.log"
        self.start_timeout_s = start_timeout_s
        self.binary = find_binary(self.binary_name)
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self.binary_name} has not been started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port``, as a scrape target or for ``push_to_gateway``."""
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write whatever the command line refers to (config files, directories)."""

    def start(self) -> Self:
        if self._proc is not None:
            raise RuntimeError(f"{self.binary_name} already running (pid {self._proc.pid})")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.start_timeout_s
        for attempt in range(1, _START_ATTEMPTS + 1):
            self._port = pick_port()
            self._prepare()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._spawn()
            try:
                self._wait_ready(deadline)
            except PrometheusError:
                self.stop()
                log = tail(self.log_path, offset)
                if "address already in use" in log and attempt < _START_ATTEMPTS:
                    continue  # somebody took the port between probe and bind
                raise PrometheusError(f"{self.binary_name} did not become ready:\n{log}") from None
            except BaseException:
                self.stop()
                raise
            return self
        raise AssertionError("unreachable")

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._out is not None:
            self._out.close()
            self._out = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self) -> str:
        return tail(self.log_path)

    def _spawn(self) -> None:
        self._out = self.log_path.open("ab")
        self._proc = spawn_server(self._command(), self._out, self.base_dir)

    def _wait_ready(self, deadline: float) -> None:
        proc = self._proc
        assert proc is not None
        while not _ready(f"{self.url}/-/ready"):
            if proc.poll() is not None:
                raise PrometheusError(f"{self.binary_name} exited with code {proc.returncode}")
            if time.monotonic() >= deadline:
                raise PrometheusError(f"not ready within {self.start_timeout_s:.0f}s")
            time.sleep(_POLL_INTERVAL_S)


class Pushgateway(_Server):
    """``prometheus-pushgateway`` without persistence: metrics live as long as the process."""

    binary_name = "prometheus-pushgateway"

    def __init__(
        self, base_dir: Path | str, *, start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    ) -> None:
        super().__init__(base_dir, start_timeout_s=start_timeout_s)

    def _command(self) -> list[str]:
        return [self.binary, f"--web.listen-address={self.address}", "--log.level=warn"]


@dataclass(frozen=True)
class ScrapeJob:
    """A static scrape job. ``honor_labels`` keeps pushed ``job``/``instance`` labels."""

    name: str
    targets: Sequence[str]
    honor_labels: bool = False
    metrics_path: str = "/metrics"


class PrometheusServer(_Server):
    """``prometheus`` with the caller's static scrape jobs and rule files.

    ``scrape_interval_s`` is both the scrape and the rule evaluation interval.
    """

    binary_name = "prometheus"

    def __init__(
        self,
        base_dir: Path | str,
        *,
        scrape: Sequence[ScrapeJob] = (),
        rule_files: Sequence[Path | str] = (),
        scrape_interval_s: float = 1.0,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        super().__init__(base_dir, start_timeout_s=start_timeout_s)
        self.config_path = self.base_dir / "prometheus.yml"
        self.tsdb_path = self.base_dir / "tsdb"
        self.scrape = list(scrape)
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.scrape_interval_s = scrape_interval_s

    def _prepare(self) -> None:
        interval = f"{round(self.scrape_interval_s * 1000)}ms"
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": job.name,
                    "honor_labels": job.honor_labels,
                    "metrics_path": job.metrics_path,
                    "static_configs": [{"targets": list(job.targets)}],
                }
                for job in self.scrape
            ],
        }
        # JSON is YAML: no YAML writer needed.
        self.config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        self.tsdb_path.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.tsdb_path}",
            f"--web.listen-address={self.address}",
            "--log.level=warn",
        ]

    # ------------------------------------------------------------------ HTTP API

    def api(self, path: str, **params: str) -> Any:
        """``/api/v1/<path>``; the ``data`` of a success, :class:`PrometheusError` otherwise."""
        body = urllib.parse.urlencode(params).encode() if params else None
        answer = _http(f"{self.url}/api/v1/{path}", data=body)
        if answer.get("status") != "success":
            raise PrometheusError(
                f"{path} {params}: {answer.get('errorType')}: {answer.get('error')}"
            )
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate ``expr`` now; the result as a list (a scalar or string becomes one item)."""
        data = self.api("query", query=expr)
        result = data["result"]
        if data["resultType"] in {"scalar", "string"}:
            return [{"value": result}]
        return list(result)

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self.api("rules")["groups"])

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[dict[str, Any]]], bool],
        timeout_s: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Poll ``query(expr)`` until ``predicate(result)`` holds; raise at the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{expr!r} still {result!r} after {timeout_s}s")
            time.sleep(_POLL_INTERVAL_S)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
        """Poll ``condition()`` until true; raise naming ``what`` at the deadline."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{what} not true after {timeout_s}s")
            time.sleep(_POLL_INTERVAL_S)
