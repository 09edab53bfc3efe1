"""kvstore.election (campaign / leader / run_as_leader) and kvstore.fencing, on both backends.

Two candidates are two Election objects: on InmemBackend over one backend, on DynamoDB over two
backends (two clients) on one table. Timings are short (TTL 1 s); bounds are generous.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kvstore import Entry, Fence, FenceRejected, LockLost, LockTimeout
from kvstore.election import Election, Term
from kvstore.errors import InvalidKey, InvalidValue
from kvstore.fencing import fenced_delete, fenced_put
from kvstore.inmem import InmemBackend

FAST: dict[str, float] = {"ttl": 1.0, "renew_interval": 0.25, "watch_interval": 0.25, "retry_interval": 0.05}
STALLED: dict[str, float] = {"ttl": 1.0, "renew_interval": 5.0, "watch_interval": 0.25, "retry_interval": 0.05}


def lock_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("lock-") and not t.done()]


async def test_campaign_leads_with_an_int_token_and_resigns_on_exit(ha_nodes: tuple[Any, Any]) -> None:
    a, b = ha_nodes
    election = Election(a, "svc/leader", "node-a", **FAST)
    watcher = Election(b, "svc/leader", "watcher", **FAST)
    assert await watcher.leader() is None
    async with election.campaign() as term:
        assert type(term.fencing_token) is int
        assert not term.lost.is_set() and term.is_leader
        assert term.fence == Fence("svc/leader", term.fencing_token)
        assert await watcher.leader() == "node-a"
        await asyncio.sleep(1.5)  # past a TTL: the lease is renewed underneath
        assert term.is_leader
        term.raise_if_lost()
    assert term.lost.is_set() and not term.is_leader, "resigning ends the term"
    with pytest.raises(LockLost):
        term.raise_if_lost()
    assert await watcher.leader() is None, "resigning releases the lock at once"
    assert lock_tasks() == []


async def test_second_candidate_leads_after_the_first_resigns(ha_nodes: tuple[Any, Any]) -> None:
    a, b = ha_nodes
    first = Election(a, "svc/leader", "a", **FAST)
    second = Election(b, "svc/leader", "b", **FAST)
    order: list[str] = []

    async def run_second() -> int:
        async with second.campaign() as term:
            order.append("b leads")
            return term.fencing_token

    async with first.campaign() as t1:
        order.append("a leads")
        waiting = asyncio.create_task(run_second())
        await asyncio.sleep(1.5)
        assert not waiting.done(), "no second leader while the first holds"
        order.append("a resigns")
    t2 = await asyncio.wait_for(waiting, 5)
    assert order == ["a leads", "a resigns", "b leads"]
    assert t2 > t1.fencing_token


async def test_exception_in_the_body_propagates_and_resigns(ha_nodes: tuple[Any, Any]) -> None:
    a, _ = ha_nodes
    election = Election(a, "exc/leader", "v", **FAST)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with election.campaign():
            raise Boom
    assert await election.leader() is None


async def test_exception_survives_a_failing_resignation(inmem: InmemBackend) -> None:
    election = Election(inmem, "exc2/leader", "v", **FAST)
    with pytest.raises(KeyError):
        async with election.campaign():
            await inmem.aclose()  # the release will fail with BackendClosed
            raise KeyError("body")
    assert lock_tasks() == []


async def test_cancellation_while_leading_resigns(ha_nodes: tuple[Any, Any]) -> None:
    a, b = ha_nodes
    election = Election(a, "cancel/leader", "v", **FAST)
    leading = asyncio.Event()

    async def lead() -> None:
        async with election.campaign():
            leading.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(lead())
    await asyncio.wait_for(leading.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await Election(b, "cancel/leader", "w", **FAST).leader() is None
    assert lock_tasks() == []


async def test_cancellation_while_campaigning_leaves_nothing_held(ha_nodes: tuple[Any, Any]) -> None:
    a, b = ha_nodes
    holder = Election(a, "cwait/leader", "holder", **FAST)
    candidate = Election(b, "cwait/leader", "candidate", **FAST)
    async with holder.campaign():

        async def campaign() -> None:
            async with candidate.campaign():
                pytest.fail("must not lead while the holder does")

        task = asyncio.create_task(campaign())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # The holder resigned and the cancelled candidate is gone: nobody leads, nobody renews.
    assert await candidate.leader() is None
    await asyncio.sleep(0.3)
    assert await candidate.leader() is None
    assert lock_tasks() == []


async def test_campaign_timeout(ha_nodes: tuple[Any, Any]) -> None:
    a, b = ha_nodes
    async with Election(a, "to/leader", "a", **FAST).campaign():
        with pytest.raises(LockTimeout):
            async with Election(b, "to/leader", "b", **FAST).campaign(timeout=0.3):
                pytest.fail("must not lead")
    async with Election(b, "to/leader", "b", **FAST).campaign(timeout=5) as term:
        assert term.is_leader


async def test_term_lost_is_set_when_replaced(ha_nodes: tuple[Any, Any]) -> None:
    a, b = ha_nodes
    with pytest.warns(RuntimeWarning):
        stalled = Election(a, "rep/leader", "stalled", **STALLED)
    async with stalled.campaign() as old, Election(b, "rep/leader", "fresh", **FAST).campaign(timeout=10) as new:
        assert old.lost.is_set(), "the old leader knew before the new one was granted"
        assert new.fencing_token > old.fencing_token
        assert await stalled.leader() == "fresh"
    assert await stalled.leader() is None  # both resigned


async def test_fenced_writes_through_terms(ha_nodes: tuple[Any, Any]) -> None:
    a, b = ha_nodes
    with pytest.warns(RuntimeWarning):
        first = Election(a, "jobs/leader", "a", **STALLED)
    async with first.campaign() as old:
        await fenced_put(a, Entry("jobs/state", b"a"), fence=old.fence)
        async with Election(b, "jobs/leader", "b", **FAST).campaign(timeout=10) as new:
            await fenced_put(b, Entry("jobs/state", b"b"), fence=new.fence)
            with pytest.raises(FenceRejected):
                await fenced_put(a, Entry("jobs/state", b"zombie"), fence=old.fence)
            with pytest.raises(FenceRejected):
                await fenced_delete(a, "jobs/state", fence=old.fence)
            assert await a.get("jobs/state") == Entry("jobs/state", b"b")
            await fenced_delete(b, "jobs/state", fence=new.fence)
            assert await a.get("jobs/state") is None


async def test_fenced_put_validates_its_fence(inmem: InmemBackend) -> None:
    with pytest.raises(InvalidValue):
        await fenced_put(inmem, Entry("k", b"v"), fence=("k", 1))  # type: ignore[arg-type]
    with pytest.raises(InvalidValue):
        await fenced_put(inmem, Entry("k", b"v"), fence=Fence("k", True))
    assert await inmem.get("k") is None


async def test_run_as_leader_recampaigns_after_a_loss(ha_nodes: tuple[Any, Any]) -> None:
    a, _ = ha_nodes
    # A stalled holder loses every term after ~0.8 s: run_as_leader must cancel the body, resign,
    # campaign again, and call the body with the new term.
    with pytest.warns(RuntimeWarning):
        election = Election(a, "run/leader", "v", **STALLED)
    terms: list[Term] = []
    cancelled: list[int] = []

    async def body(term: Term) -> str:
        terms.append(term)
        if len(terms) < 3:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                assert term.lost.is_set(), "the body is cancelled because its term was lost"
                cancelled.append(term.fencing_token)
                raise
        return f"done in term {term.fencing_token}"

    result = await asyncio.wait_for(election.run_as_leader(body), 15)
    assert len(terms) == 3
    assert cancelled == [terms[0].fencing_token, terms[1].fencing_token]
    tokens = [t.fencing_token for t in terms]
    assert tokens == sorted(set(tokens))
    assert result == f"done in term {tokens[-1]}"
    assert await election.leader() is None, "resigned after the body returned"
    assert lock_tasks() == []


async def test_run_as_leader_propagates_the_body_exception(ha_nodes: tuple[Any, Any]) -> None:
    a, _ = ha_nodes
    election = Election(a, "runexc/leader", "v", **FAST)

    async def body(term: Term) -> None:
        raise ValueError(term.fencing_token)

    with pytest.raises(ValueError):
        await election.run_as_leader(body)
    assert await election.leader() is None


async def test_cancelling_run_as_leader_cancels_the_body_and_resigns(ha_nodes: tuple[Any, Any]) -> None:
    a, _ = ha_nodes
    election = Election(a, "runcancel/leader", "v", **FAST)
    started = asyncio.Event()
    body_cancelled = asyncio.Event()

    async def body(term: Term) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            body_cancelled.set()
            raise

    task = asyncio.create_task(election.run_as_leader(body))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert body_cancelled.is_set()
    assert await election.leader() is None
    assert lock_tasks() == []


def test_election_validates_its_arguments() -> None:
    backend = InmemBackend()
    with pytest.raises(InvalidKey):
        Election(backend, "bad/", "v")
    with pytest.raises(InvalidValue):
        Election(backend, "ok", 3)  # type: ignore[arg-type]
    with pytest.warns(RuntimeWarning):
        Election(backend, "ok", "v", ttl=1, renew_interval=2)  # a stalled holder: allowed, warned
