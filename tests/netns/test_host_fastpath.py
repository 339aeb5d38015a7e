"""The host helpers on a bridge ADD's path, where they skip lookups and reads.

Each skip rests on a kernel fact (NLM_F_EXCL refuses a taken name before creating
anything, a veth's IFLA_LINK is its peer's ifindex, a bridge found up needs no "up"); these
check what a user sees stays as it was: the error for a taken name, the port on its bridge,
a bridge that is up, sysctls that read back what was written.
"""

from __future__ import annotations

import os
import threading

import pytest

from pycni import host
from pycni.host import _netns, run_in_netns
from pycni.spec import KernelError
from pycni.testing import ns_run, unique_name

pytestmark = pytest.mark.netns


def _veth_from(netns: str, host_ns: str, ifname: str) -> host.Veth:
    def make() -> host.Veth:
        with host.current_netns_fd() as fd:
            return run_in_netns(netns, host.create_veth, ifname, fd)

    return run_in_netns(host_ns, make)


def test_veth_reports_its_peers_index_in_the_other_namespace(host_ns: str, netns: str) -> None:
    veth = _veth_from(netns, host_ns, "eth0")
    peer = run_in_netns(host_ns, host.require_link, veth.peer_name)
    assert veth.peer_index == peer.index
    assert veth.index == run_in_netns(netns, host.require_link, "eth0").index


def test_veth_with_a_taken_name_is_refused_and_leaves_nothing(host_ns: str, netns: str) -> None:
    _veth_from(netns, host_ns, "eth0")
    before = {link.name for link in run_in_netns(host_ns, host.list_links)}
    with pytest.raises(KernelError, match="'eth0' already exists in the container namespace"):
        _veth_from(netns, host_ns, "eth0")
    assert {link.name for link in run_in_netns(host_ns, host.list_links)} == before


def test_ensure_bridge_sets_a_down_bridge_up_and_keeps_an_up_one(host_ns: str) -> None:
    name = unique_name("br")

    def scenario() -> tuple[bool, bool, bool, int, int]:
        made = host.ensure_bridge(name)
        host.set_link_down(name)
        again = host.ensure_bridge(name)  # found down: set up and read back
        up_now = host.require_link(name).up
        kept = host.ensure_bridge(name)  # found up: returned as found
        return made.up, again.up, up_now and kept.up, made.index, kept.index

    made_up, again_up, kept_up, made_index, kept_index = run_in_netns(host_ns, scenario)
    assert (made_up, again_up, kept_up) == (True, True, True)
    assert made_index == kept_index
    assert run_in_netns(host_ns, host.sysctl_get, f"net/ipv6/conf/{name}/accept_ra") == "0"


def test_ensure_bridge_leaves_no_undo_for_a_bridge_another_add_made(
        host_ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A concurrent ADD creates the bridge between this one's lookup and its create (which
    then fails with EEXIST): the bridge is not this ADD's, so its rollback keeps it even
    though no port has joined yet."""
    from pycni.host import _bridge

    name = unique_name("br")
    real = _bridge.link_info

    def lookup_then_other_add(ifname: str) -> host.LinkInfo | None:
        monkeypatch.setattr(_bridge, "link_info", real)
        found = real(ifname)
        ns_run(host_ns, "ip", "link", "add", name, "type", "bridge", check=True)
        return found

    monkeypatch.setattr(_bridge, "link_info", lookup_then_other_add)

    def scenario() -> tuple[bool, bool]:
        undo = host.Undo()
        made = host.ensure_bridge(name, undo=undo)
        undo.run()  # this ADD fails later
        return made.up, host.link_info(name) is not None

    assert run_in_netns(host_ns, scenario) == (True, True)


def test_port_attached_by_index_joins_the_bridge(host_ns: str, netns: str) -> None:
    name = unique_name("br")
    br = run_in_netns(host_ns, host.ensure_bridge, name)
    veth = _veth_from(netns, host_ns, "eth0")

    def attach() -> host.LinkInfo:
        host.set_link_up(veth.peer_name, index=veth.peer_index)
        host.attach_port(veth.peer_name, name, hairpin=True, port_index=veth.peer_index,
                         bridge_index=br.index)
        return host.require_link(veth.peer_name)

    port = run_in_netns(host_ns, attach)
    assert port.master == br.index
    assert port.up
    assert port.port.get("mode") == 1  # hairpin


def test_sysctl_set_writes_and_reads_back(netns: str) -> None:
    def scenario() -> tuple[str, str, str]:
        name = "net/ipv4/conf/lo/arp_notify"
        before = host.sysctl_get(name)
        host.sysctl_set(name, "1")
        after = host.sysctl_get(name)
        host.sysctl_set(name, "1")  # already so: no write, same value
        return before, after, host.sysctl_get(name)

    assert run_in_netns(netns, scenario) == ("0", "1", "1")
    # Several values on one line come back whole.
    assert run_in_netns(netns, host.sysctl_get,
                        "net/ipv4/ip_local_port_range").split() == ["32768", "60999"]


def test_sysctl_errors_name_the_setting(netns: str) -> None:
    with pytest.raises(KernelError, match="failed to read sysctl net/ipv4/conf/pytnone/"):
        run_in_netns(netns, host.sysctl_get, "net/ipv4/conf/pytnone/arp_notify")
    with pytest.raises(KernelError, match="failed to set sysctl net/ipv4/conf/pytnone/"):
        run_in_netns(netns, host.sysctl_set, "net/ipv4/conf/pytnone/arp_notify", "1")
    assert not run_in_netns(netns, host.sysctl_try_set, "net/ipv4/conf/pytnone/arp_notify", "1")


def test_reused_sockets_follow_a_thread_that_moves(host_ns: str, netns: str) -> None:
    """Inside reuse_sockets a thread's namespace is remembered; a setns must forget it, or
    the thread would go on talking to the namespace it left."""
    from pycni.host.links import reuse_sockets

    name = unique_name("br")
    run_in_netns(host_ns, host.ensure_bridge, name)
    seen: list[object] = []

    def mover() -> None:
        fds = [_netns.open_netns(p) for p in (host_ns, netns)]
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _netns._setns(fds[0])
            with reuse_sockets():
                seen.append(host.link_info(name) is not None)
                _netns._setns(fds[1])
                seen.append(host.link_info(name) is not None)
        except BaseException as exc:
            seen.append(exc)
        finally:
            _netns._setns(home)
            for fd in (*fds, home):
                os.close(fd)

    thread = threading.Thread(target=mover)
    thread.start()
    thread.join()
    assert seen == [True, False]


def test_best_effort_sysctl_is_written_even_when_equal(netns: str) -> None:
    """As the reference writes it: the device's value is then its own, and a later change
    of ``conf/default`` (which the kernel copies to devices that never had theirs set)
    leaves it alone."""
    def scenario() -> str:
        assert host.sysctl_get("net/ipv4/conf/lo/arp_notify") == "0"
        assert host.sysctl_try_set("net/ipv4/conf/lo/arp_notify", "0")
        host.sysctl_set("net/ipv4/conf/default/arp_notify", "1")
        return host.sysctl_get("net/ipv4/conf/lo/arp_notify")

    assert run_in_netns(netns, scenario) == "0"


def test_dump_over_many_datagrams_and_errors_on_one_socket(netns: str) -> None:
    """A link dump larger than one datagram comes back whole (each datagram read once into
    a reused buffer); an error answer raises and the socket goes on serving requests."""
    from pycni.host.links import reuse_sockets

    def scenario() -> tuple[list[str], list[str], str, list[str]]:
        made = []
        with host.current_netns_fd() as fd:
            for i in range(25):  # ~1.5 KiB a link: 51 links span several 32 KiB datagrams
                host.create_veth(f"pyta{i}", fd, peer_name=f"pytb{i}")
                made += [f"pyta{i}", f"pytb{i}"]
        with reuse_sockets():  # one socket for all that follows
            first = [link.name for link in host.list_links()]
            try:
                host.set_link_up("pyta0", index=999999)  # the kernel answers ENODEV
                error = ""
            except KernelError as exc:
                error = str(exc)
            again = [link.name for link in host.list_links()]
        return made, first, error, again

    made, first, error, again = run_in_netns(netns, scenario)
    assert set(first) == set(made) | {"lo"}
    assert "failed to set link 'pyta0' up" in error
    assert again == first


def test_read_for_delete_dumps_addresses_only_when_asked(host_ns: str, netns: str) -> None:
    import ipaddress

    with_addr = [_veth_from(netns, host_ns, name) for name in ("eth0", "eth1")]

    def in_container() -> tuple[host.DeleteInfo, host.DeleteInfo]:
        for i, veth in enumerate(with_addr):
            host.add_address(veth.name, ipaddress.ip_interface(f"10.9.{i}.2/24"))
        return (host.read_for_delete("eth0", host_fd[0]),
                host.read_for_delete("eth1", host_fd[0], addresses=False))

    host_fd = [_netns.open_netns(host_ns)]
    try:
        asked, not_asked = run_in_netns(netns, in_container)
    finally:
        os.close(host_fd[0])
    assert asked.addresses == ["10.9.0.2/24"]
    assert not_asked.addresses == []
    # Both veths' peers are on the host side, left for the batched delete.
    assert (asked.peer_index, not_asked.peer_index) == (with_addr[0].peer_index,
                                                        with_addr[1].peer_index)
