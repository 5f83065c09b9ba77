"""ECS task scale-in protection (scenario 26) against a fake ECS agent on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from support.ecs_agent import AgentCall, FakeEcsAgent, unreachable_uri
from support.pipeline import assert_invariant, count, produce_cli, start_worker, worker_report

from cli.datagen import generate_csv
from headrace.envelope import Envelope
from headrace.retry import Backoff
from headrace.settings import Settings, load_settings
from headrace.tables import ingest_ledger
from worker.app import Worker
from worker.inflight import InFlight, Message
from worker.protection import TaskProtection

ON = {"ProtectionEnabled": True, "ExpiresInMinutes": 15}
OFF = {"ProtectionEnabled": False}
FAST_RETRY = Backoff(base_s=0.05, cap_s=0.1)
SMALL_MESSAGES = {"HEADRACE_PRODUCER__MAX_MESSAGE_BYTES": "32768"}


def _message(i: int) -> Message:
    env = Envelope.from_rows("0" * 32, i, "observations", ("sku",), "t.csv", [[f"S{i}"]], [i + 2])
    return Message(
        message_id=f"m{i}",
        receipt=f"r{i}",
        envelope=env,
        receive_count=1,
        deadline=time.monotonic() + 60,
    )


def _inflight() -> InFlight:
    return InFlight(max_messages=10, max_rows=1000)


@pytest.fixture
async def agent() -> AsyncIterator[FakeEcsAgent]:
    fake = FakeEcsAgent()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@contextlib.asynccontextmanager
async def running(protection: TaskProtection) -> AsyncIterator[asyncio.Task[None]]:
    """The protection loop in the background; cancelled and closed (off) on the way out."""
    task = asyncio.create_task(protection.run(), name="protection")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await protection.close()


async def _told(p: TaskProtection, enabled: bool) -> None:
    """Wait until ``p`` has the agent's answer: the fake agent records a call when it
    receives it, a little before the client has read the response."""
    deadline = time.monotonic() + 10
    while p.enabled is not enabled:
        assert time.monotonic() < deadline, f"protection never became {enabled}"
        await asyncio.sleep(0.01)


# --- the class against the fake agent --------------------------------------------------------


async def test_on_while_held_renewed_then_off_after_idle(agent: FakeEcsAgent) -> None:
    inflight = _inflight()
    p = TaskProtection(agent.uri, inflight, expires_min=15, idle_s=0.3, renew_s=0.2)
    async with running(p) as task:
        m = _message(0)
        inflight.add(m)
        await agent.wait_for(lambda calls: len(calls) >= 3)  # on, then renewed twice
        assert [c.body for c in agent.calls[:3]] == [ON, ON, ON]
        released = time.monotonic()
        await inflight.remove([m])
        await agent.wait_for(lambda calls: not calls[-1].enabled)
        off = agent.calls[-1]
        assert off.body == OFF
        assert off.at - released >= 0.29  # debounced, not per batch
        assert all(c.ok for c in agent.calls)
        await _told(p, False)
        assert (p.enabled, p.disables, p.failures) == (False, 1, 0)
        assert p.enables == len(agent.calls) - 1
        assert not task.done()
        calls = len(agent.calls)
    assert len(agent.calls) == calls  # already off: closing says nothing more


async def test_work_within_the_debounce_does_not_flap(agent: FakeEcsAgent) -> None:
    inflight = _inflight()
    # The next batch arrives right after the last one is released, with no sleep between:
    # far inside the 2 s debounce even when a loaded machine stalls the loop for a while.
    p = TaskProtection(agent.uri, inflight, expires_min=15, idle_s=2.0)
    async with running(p):
        first, second = _message(0), _message(1)
        inflight.add(first)
        await p.settled()
        await inflight.remove([first])
        inflight.add(second)
        await p.settled()
        released = time.monotonic()
        await inflight.remove([second])
        await agent.wait_for(lambda calls: len(calls) == 2)
    assert [c.body for c in agent.calls] == [ON, OFF]
    assert agent.calls[1].at - released >= 1.99


async def test_settled_returns_once_the_agent_has_protection_on(agent: FakeEcsAgent) -> None:
    inflight = _inflight()
    p = TaskProtection(agent.uri, inflight, expires_min=15, idle_s=60)
    async with running(p):
        inflight.add(_message(0))
        await p.settled()
        assert [c.body for c in agent.calls] == [ON]  # reached the agent before returning
        assert p.enabled is True
    assert [c.body for c in agent.calls] == [ON, OFF]  # close turns it off


async def test_unknown_state_at_start_is_turned_off_once(agent: FakeEcsAgent) -> None:
    """A restarted container may inherit protection left on: idle, it is turned off."""
    p = TaskProtection(agent.uri, _inflight(), expires_min=15, idle_s=0.1)
    async with running(p):
        await agent.wait_for(lambda calls: len(calls) == 1)
        await _told(p, False)
    assert [c.body for c in agent.calls] == [OFF]


async def test_agent_errors_are_retried_with_backoff(agent: FakeEcsAgent) -> None:
    agent.fail_next("500", "failure", "garbage")
    inflight = _inflight()
    p = TaskProtection(agent.uri, inflight, expires_min=15, idle_s=60, backoff=FAST_RETRY)
    async with running(p) as task:
        inflight.add(_message(0))
        await p.settled()  # returns after the first failure, without waiting for a retry
        assert p.failures >= 1
        await agent.wait_for(lambda calls: any(c.ok for c in calls))
        assert [c.failure for c in agent.calls] == ["500", "failure", "garbage", None]
        assert [c.body for c in agent.calls] == [ON] * 4
        await _told(p, True)
        assert (p.enabled, p.enables, p.failures) == (True, 1, 3)
        assert not task.done()


async def test_redirects_are_not_followed_and_bodies_are_bounded(agent: FakeEcsAgent) -> None:
    agent.fail_next("redirect", "huge")
    inflight = _inflight()
    p = TaskProtection(agent.uri, inflight, expires_min=15, idle_s=60, backoff=FAST_RETRY)
    async with running(p):
        inflight.add(_message(0))
        await agent.wait_for(lambda calls: any(c.ok for c in calls))
        await _told(p, True)
    assert [c.failure for c in agent.calls][:3] == ["redirect", "huge", None]
    assert agent.redirected == 0  # the agent's answer is taken as it is, never followed
    assert p.failures == 2  # the padded answer was refused, not read whole


async def test_a_hanging_agent_times_out(agent: FakeEcsAgent) -> None:
    agent.fail_next("hang")
    inflight = _inflight()
    p = TaskProtection(
        agent.uri, inflight, expires_min=15, idle_s=60, timeout_s=0.3, backoff=FAST_RETRY
    )
    async with running(p):
        inflight.add(_message(0))
        async with asyncio.timeout(5):
            await p.settled()
        assert p.failures == 1
        await agent.wait_for(lambda calls: any(c.ok and c.enabled for c in calls))
        await _told(p, True)


async def test_an_unreachable_agent_never_raises() -> None:
    inflight = _inflight()
    p = TaskProtection(
        unreachable_uri(), inflight, expires_min=15, idle_s=60, timeout_s=1, backoff=FAST_RETRY
    )
    async with running(p) as task:
        inflight.add(_message(0))
        async with asyncio.timeout(5):
            await p.settled()
        deadline = time.monotonic() + 10
        while p.failures < 3:  # retried, not given up
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert not task.done()
        assert p.enabled is None
    assert p.failures >= 4  # close tried once more, quietly


def test_ecs_agent_uri_comes_from_the_ecs_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HEADRACE_WORKER__ECS_AGENT_URI", "HEADRACE_WORKER__POLLERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ECS_AGENT_URI", raising=False)
    assert load_settings().worker.ecs_agent_uri is None
    monkeypatch.setenv("ECS_AGENT_URI", "http://169.254.170.2/api/abc-123")
    monkeypatch.setenv("HEADRACE_WORKER__POLLERS", "5")
    s = load_settings()
    assert s.worker.ecs_agent_uri == "http://169.254.170.2/api/abc-123"
    assert s.worker.pollers == 5  # the other worker settings still come from the environment
    monkeypatch.setenv("HEADRACE_WORKER__ECS_AGENT_URI", "")  # ours wins: empty turns it off
    assert load_settings().worker.ecs_agent_uri == ""


# --- a real worker ---------------------------------------------------------------------------


def _log_events(path: Path) -> list[dict[str, object]]:
    events = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            event = orjson.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


async def test_scenario_26_scale_in_protection_toggled_around_batches(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    """Protection goes on before the first commit, stays on, and goes off once drained.

    The fake agent counts the ledger (committed messages) when each call arrives, so "before
    the first commit" is checked causally, not by comparing clocks.
    """
    agent = FakeEcsAgent(probe=lambda: count(engine, ingest_ledger))
    await agent.start()
    try:
        data = generate_csv(tmp_path / "p.csv", 20_000, seed=26)
        report = produce_cli({**cli_env, **SMALL_MESSAGES}, data.path, timeout_s=120)
        total = report["total_messages"]
        env = {
            **cli_env,
            "ECS_AGENT_URI": agent.uri,  # as ECS sets it: the plain variable
            "HEADRACE_WORKER__PROTECTION_IDLE_S": "1",
            "HEADRACE_WORKER__FLUSH_ROWS": "2000",
        }
        log = tmp_path / "worker.log"
        worker = start_worker(env, log, "--idle-exit", "4")
        deadline = time.monotonic() + 120
        while worker.poll() is None:
            assert time.monotonic() < deadline, "worker never went idle"
            await asyncio.sleep(0.1)
        assert worker.returncode == 0, log.read_text()[-3000:]
        calls_at_exit = len(agent.calls)
        await asyncio.sleep(0.2)
        assert len(agent.calls) == calls_at_exit  # nothing after the process ended
    finally:
        await agent.stop()

    calls: list[AgentCall] = agent.calls
    assert calls, "the worker never called the agent"
    assert all(c.ok for c in calls), calls
    while calls and not calls[0].enabled and calls[0].probe == 0:
        calls = calls[1:]  # a slow start may reset the unknown state first: harmless
    # On before anything was committed, never off while work remained, off once drained.
    assert [c.body for c in calls] == [ON, OFF], calls
    assert calls[0].probe == 0
    assert calls[1].probe == total
    events = _log_events(log)
    names = [e.get("event") for e in events]
    batches = names.count("batch_flushed")
    assert batches >= 2, "several batches should have run under one protection"
    assert names.count("task_protection_on") == 1
    assert names.count("task_protection_failed") == 0
    # Off after the last batch and before the worker stopped (shutdown had nothing to undo).
    last_batch = len(names) - 1 - names[::-1].index("batch_flushed")
    assert last_batch < names.index("task_protection_off") < names.index("worker_idle_exit")
    counts = worker_report(log)
    assert (counts["protection_enabled"], counts["protection_disabled"]) == (1, 1)
    assert counts["messages_applied"] == total
    await assert_invariant(settings, engine, data.path)


def _with(settings: Settings, **worker: object) -> Settings:
    return settings.model_copy(update={"worker": settings.worker.model_copy(update=worker)})


async def test_protection_is_turned_off_at_shutdown_while_holding_work(
    tmp_path: Path, settings: Settings, engine: AsyncEngine, cli_env: dict[str, str]
) -> None:
    agent = FakeEcsAgent()
    await agent.start()
    try:
        data = generate_csv(tmp_path / "s.csv", 20_000, seed=27)
        produce_cli({**cli_env, **SMALL_MESSAGES}, data.path, timeout_s=120)
        worker = Worker(
            _with(
                settings,
                ecs_agent_uri=agent.uri,
                protection_idle_s=60,  # only shutdown can turn it off
                flush_rows=1000,
                max_inflight_messages=10,
                sinks=1,
            )
        )
        run = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 60
        while not (agent.calls and worker.stats.batches >= 1):
            assert time.monotonic() < deadline, "no batch under protection"
            assert not run.done(), run
            await asyncio.sleep(0.02)
        worker.stop()  # SIGTERM's path: drain, release, then protection off
        stats = await asyncio.wait_for(run, timeout=60)
    finally:
        await agent.stop()
    assert [c.body for c in agent.calls] == [ON, OFF]
    assert (stats.protection_enabled, stats.protection_disabled) == (1, 1)
    drained = await asyncio.wait_for(Worker(_with(settings, idle_exit_s=2)).run(), timeout=120)
    assert drained.messages_received > 0  # the shut-down worker handed work back
    await assert_invariant(settings, engine, data.path)


@pytest.mark.parametrize("failure", ["500", "unreachable"])
async def test_agent_failures_do_not_stop_the_worker(
    failure: str,
    tmp_path: Path,
    settings: Settings,
    engine: AsyncEngine,
    cli_env: dict[str, str],
) -> None:
    agent = FakeEcsAgent()
    await agent.start()
    agent.fail_always = "500"
    try:
        data = generate_csv(tmp_path / "f.csv", 10_000, seed=28)
        report = produce_cli({**cli_env, **SMALL_MESSAGES}, data.path, timeout_s=120)
        uri = agent.uri if failure == "500" else unreachable_uri()
        worker = Worker(
            _with(
                settings, ecs_agent_uri=uri, protection_idle_s=0.5, flush_rows=2000, idle_exit_s=2
            )
        )
        stats = await asyncio.wait_for(worker.run(), timeout=120)
    finally:
        await agent.stop()
    assert stats.task_failures == 0
    assert stats.batch_failures == 0
    assert stats.messages_applied == report["total_messages"]
    assert stats.protection_failures >= 1
    assert (stats.protection_enabled, stats.protection_disabled) == (0, 0)
    if failure == "500":
        assert agent.calls
        assert all(c.status == 500 for c in agent.calls)
    await assert_invariant(settings, engine, data.path)
