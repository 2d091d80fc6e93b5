"""Network faults between namespaces do what they say, and only that (bench/chaos/network.py).

Each host runs a probe (tests/chaos/probe.py); TCP round trips and UDP datagrams between hosts
show what passes. Needs root, ``ip`` and ``nft`` (skipped with the reason elsewhere; never in CI).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from bench.chaos.hosts import Namespaces, leftovers
from bench.chaos.network import NamespaceNetwork
from tests.chaos.namespaces import areaches, areceived, atcp, audp, hosts_with_probes

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def ns() -> Iterator[Namespaces]:
    with hosts_with_probes() as namespaces:
        yield namespaces
    assert leftovers(namespaces.run) == []


@pytest.fixture
async def net(ns: Namespaces) -> AsyncIterator[NamespaceNetwork]:
    network = NamespaceNetwork(ns, seed=1)
    yield network
    await network.heal_all()


class TestPartitions:
    async def test_a_partition_stops_exactly_that_path_and_heals(
        self, ns: Namespaces, net: NamespaceNetwork
    ) -> None:
        assert await areaches(ns, "r0", "w1") and await areaches(ns, "w1", "r0")
        await net.cut("f1", "r0", "w1", oneway=False)
        assert await atcp(ns, "r0", "w1", count=1, timeout=0.5) == "timeout"
        assert await atcp(ns, "w1", "r0", count=1, timeout=0.5) == "timeout"
        # Every other path still works.
        for src, dst in (("r0", "w0"), ("r1", "w1"), ("w1", "storage"), ("client", "r0")):
            assert await areaches(ns, src, dst), (src, dst)
        await net.uncut("f1")
        assert await areaches(ns, "r0", "w1") and await areaches(ns, "w1", "r0")

    async def test_a_partition_drops_and_never_refuses(
        self, ns: Namespaces, net: NamespaceNetwork
    ) -> None:
        """A refused connection reads as "gone" (docs/reliability.md): a cut must be silent."""
        await net.cut("f1", "w0", "w2", oneway=False)
        assert await atcp(ns, "w0", "w2", count=1, timeout=0.5) == "timeout"  # not "error 111"
        await net.uncut("f1")

    async def test_a_oneway_partition_drops_one_direction_only(
        self, ns: Namespaces, net: NamespaceNetwork
    ) -> None:
        await areceived(ns, "w0"), await areceived(ns, "storage")  # reset the counts
        await net.cut("f1", "w0", "storage", oneway=True)
        await audp(ns, "w0", "storage", 50)  # no send error either: dropped on the way
        await audp(ns, "storage", "w0", 50)
        assert (await areceived(ns, "storage")).get("w0", 0) == 0
        assert (await areceived(ns, "w0")).get("storage") == 50
        # TCP needs both directions: it cannot connect either way.
        assert await atcp(ns, "storage", "w0", count=1, timeout=0.5) == "timeout"
        await net.uncut("f1")
        await audp(ns, "w0", "storage", 50)
        assert (await areceived(ns, "storage")).get("w0") == 50

    async def test_overlapping_partitions_heal_one_by_one(
        self, ns: Namespaces, net: NamespaceNetwork
    ) -> None:
        await net.cut("f1", "r1", "w0", oneway=False)
        await net.cut("f2", "r1", "w2", oneway=True)
        await net.uncut("f1")
        assert await areaches(ns, "r1", "w0")
        assert not await areaches(ns, "r1", "w2")
        await net.uncut("f2")
        assert await areaches(ns, "r1", "w2")


class TestDelayAndLoss:
    async def test_a_delay_adds_measurable_latency_and_heals(
        self, ns: Namespaces, net: NamespaceNetwork
    ) -> None:
        before = float(await atcp(ns, "client", "r0"))
        detail = await net.delay("r0", 0.15, 0.0)
        during = float(await atcp(ns, "client", "r0", timeout=3))
        other = float(await atcp(ns, "client", "r1"))  # a path without r0: as fast as before
        await net.undelay("r0")
        after = float(await atcp(ns, "client", "r0"))
        assert before < 20 and after < 20 and other < 20, (before, after, other)
        assert 150 <= during < 400, (during, detail)

    async def test_loss_drops_that_share_of_what_the_host_sends(
        self, ns: Namespaces, net: NamespaceNetwork
    ) -> None:
        await audp(ns, "w2", "storage", 1)  # the neighbour is known before loss starts
        await areceived(ns, "storage")
        await net.lose("w2", 0.5)
        await audp(ns, "w2", "storage", 400)
        lost_half = (await areceived(ns, "storage")).get("w2", 0)
        await net.unlose("w2")
        await audp(ns, "w2", "storage", 400)
        assert 120 <= lost_half <= 280
        assert (await areceived(ns, "storage")).get("w2") == 400

    async def test_heal_all_removes_every_rule_and_delay(
        self, ns: Namespaces, net: NamespaceNetwork
    ) -> None:
        await net.cut("f1", "client", "r0", oneway=False)
        await net.delay("r1", 0.2, 0.05)
        await net.lose("w1", 0.3)
        await net.heal_all()
        assert await areaches(ns, "client", "r0")
        assert float(await atcp(ns, "client", "r1")) < 20
        await areceived(ns, "storage")
        await audp(ns, "w1", "storage", 100)
        assert (await areceived(ns, "storage")).get("w1") == 100
