"""Netfilter in bursts: concurrent portmap and masquerade calls in one process (as the agent
makes them) are merged into one transaction per table, and leave exactly the rules the same
calls made one after the other leave; one bad call in a burst fails alone.

Each scenario runs in two fresh host namespaces: one gets the calls one by one, the other all
at once from threads. The merge counters (:func:`nat_counters`, :func:`nft_counters`) show
that batches were really merged, so these tests fail if the merging goes away.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pycni.host import BurstCounters, run_in_netns
from pycni.host.netfilter import _nft, _xtables, masq, nat_counters, nft_counters
from pycni.host.netfilter._nft import nft_text
from pycni.testing import at_once, call_plugin, cni_env, ns_run, paused_burst, temp_netns

pytestmark = pytest.mark.netns

NET = "pytburst"
SANDBOX = "/run/netns/pyt-sandbox"
PODS = 12


def _pod_ip(i: int) -> str:
    return f"10.77.0.{10 + i}"


def _portmap_conf(backend: str, i: int, **extra: Any) -> dict[str, Any]:
    prev = {"cniVersion": "1.0.0",
            "interfaces": [{"name": "pytbr0"}, {"name": "eth0", "sandbox": SANDBOX}],
            "ips": [{"address": "10.77.0.1/24", "interface": 0},
                    {"address": f"{_pod_ip(i)}/24", "interface": 1, "gateway": "10.77.0.1"}]}
    return {"cniVersion": "1.0.0", "name": NET, "type": "portmap", "backend": backend,
            "runtimeConfig": {"portMappings": [{"hostPort": 20000 + i, "containerPort": 80,
                                                "protocol": "tcp"}]},
            "prevResult": prev, **extra}


def _calls(host: str, backend: str, command: str, pods: range) -> list[Callable[[], object]]:
    """Per pod: its portmap call (in-process, as the agent runs it) and its masquerade."""
    out: list[Callable[[], object]] = []
    for i in pods:
        env = cni_env(command, container_id=f"pod{i}", netns=SANDBOX)
        conf = _portmap_conf(backend, i)
        out.append(lambda env=env, conf=conf: call_plugin(host, "portmap", env, conf).ok())
        impl = masq.BACKENDS[backend]()
        if command == "ADD":
            ips = [ipaddress.ip_interface(f"{_pod_ip(i)}/24")]
            out.append(lambda impl=impl, i=i, ips=ips: run_in_netns(
                host, impl.setup, NET, f"pod{i}", "eth0", ips))
        else:
            out.append(lambda impl=impl, i=i: run_in_netns(
                host, impl.teardown, NET, f"pod{i}", "eth0"))
    return out


def _errors(outcome: list[object]) -> list[Exception | None]:
    """Each call's error, or None."""
    return [o if isinstance(o, Exception) else None for o in outcome]


def _at_once(calls: list[Callable[[], object]]) -> list[Exception | None]:
    return _errors(at_once(calls))


def _burst(backend: str, calls: list[Callable[[], object]]) -> list[Exception | None]:
    """The calls at once, merged as a whole in the backend's paused combiner."""
    return _errors(paused_burst(_COMBINERS[backend], calls))


_COUNTERS = re.compile(r"\[\d+:\d+\]|counter packets \d+ bytes \d+")


def ruleset(host: str, backend: str) -> dict[str, list[str]]:
    """Rules per chain, normalised: sorted (the order of the calls in a burst is not fixed),
    except POSTROUTING's first rule, which portmap's masquerade jump must stay."""
    chains: dict[str, list[str]] = {}
    if backend == "iptables":
        for tool in ("iptables-save", "ip6tables-save"):
            for line in ns_run(host, tool, "-t", "nat", check=True).stdout.splitlines():
                if line.startswith((":", "-A")):
                    chain = line.split()[1] if line.startswith("-A") else line[1:].split()[0]
                    chains.setdefault(f"{tool} {chain}", []).append(_COUNTERS.sub("", line))
    else:
        table = where = ""
        for raw in ns_run(host, "nft", "list", "ruleset", check=True).stdout.splitlines():
            line = _COUNTERS.sub("", raw.strip())
            if line.startswith("table "):
                table = where = line
            elif line.startswith("chain "):
                where = f"{table} / {line}"
            if line and line != "}":
                chains.setdefault(where, []).append(line)
    first = {k: v[1] for k, v in chains.items() if k.endswith(" POSTROUTING") and len(v) > 1}
    return {**{k: sorted(v) for k, v in chains.items()}, **{f"{k} first": [v]
                                                           for k, v in first.items()}}


def _delta(after: BurstCounters, before: BurstCounters) -> BurstCounters:
    return BurstCounters(after.calls - before.calls, after.transactions - before.transactions,
                         after.batches - before.batches, after.fallbacks - before.fallbacks)


_COMBINERS = {"iptables": _xtables._COMBINER, "nftables": _nft._COMBINER}


def _counters(backend: str) -> BurstCounters:
    return nat_counters() if backend == "iptables" else nft_counters()


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str]]:
    with temp_netns("h") as one_by_one, temp_netns("h") as together:
        yield one_by_one, together


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_a_burst_leaves_the_rules_of_the_same_calls_one_by_one(
        backend: str, two_hosts: tuple[str, str]) -> None:
    one_by_one, together = two_hosts
    for command in ("ADD", "DEL"):
        for call in _calls(one_by_one, backend, command, range(PODS)):
            call()
        before = _counters(backend)
        assert _burst(backend, _calls(together, backend, command, range(PODS))) \
            == [None] * 2 * PODS
        merged = _delta(_counters(backend), before)
        assert ruleset(together, backend) == ruleset(one_by_one, backend), command
        # Merged for real: fewer transactions than calls, and none redone one by one.
        assert merged.batches > 0, merged
        assert merged.transactions < merged.calls, merged
        assert merged.fallbacks == 0, merged
    if backend == "iptables":
        assert not any("CNI-DN-" in chain for chain in ruleset(together, backend))
    # And as the threads race, unpaused (lone calls and batches interleaving as they come).
    for command in ("ADD", "DEL"):
        for call in _calls(one_by_one, backend, command, range(PODS)):
            call()
        assert _at_once(_calls(together, backend, command, range(PODS))) == [None] * 2 * PODS
        assert ruleset(together, backend) == ruleset(one_by_one, backend), command


def _bad_call(host: str, backend: str) -> Callable[[], object]:
    """A call the kernel refuses: for iptables a portmap ADD whose condition names a match
    module that does not exist; for nftables a ``create`` of a table that exists."""
    if backend == "iptables":
        env = cni_env("ADD", container_id="podbad", netns=SANDBOX)
        conf = _portmap_conf(backend, 99, conditionsV4=["-m", "pytnosuchmatch"])
        return lambda: call_plugin(host, "portmap", env, conf).ok()
    ns_run(host, "nft", "add", "table", "ip", "pytconflict", check=True)
    return lambda: run_in_netns(host, nft_text, "create table ip pytconflict\n",
                                what="a table that exists")


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_one_bad_call_in_a_burst_fails_alone(backend: str, two_hosts: tuple[str, str]) -> None:
    one_by_one, host = two_hosts
    for call in _calls(one_by_one, backend, "ADD", range(PODS)):
        call()
    want = ruleset(one_by_one, backend)
    if backend == "nftables":
        want["table ip pytconflict {"] = ["table ip pytconflict {"]
    calls = _calls(host, backend, "ADD", range(PODS))
    calls.insert(PODS, _bad_call(host, backend))
    before = _counters(backend)
    outcome = _burst(backend, calls)
    merged = _delta(_counters(backend), before)
    assert merged.fallbacks > 0, merged
    bad = outcome.pop(PODS)
    assert outcome == [None] * 2 * PODS
    assert bad is not None
    assert ("pytnosuchmatch" if backend == "iptables" else "File exists") in str(bad)
    assert ruleset(host, backend) == want
