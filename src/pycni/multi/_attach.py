"""Per-attachment operations on a live pod: hot-plug and live switching are built on these.

The pod's record (:mod:`pycni.multi._record`) says where the pod is (netns, container ID)
and what it has; :func:`add_attachment` and :func:`remove_attachment` change one attachment
under the record's lock, with the same delegate code the ``multus`` plugin's ADD and DEL
use, and rewrite the pod's network-status. A later CNI DEL of the pod works from the record,
so it tears down what was hot-plugged too::

    records = PodRecords(conf.cni_dir)
    record = records.find("ns", "web-0")[0]
    record = add_attachment(conf, record, NetworkSelection("macvlan-conf", "ns"),
                            source=source)
    remove_attachment(conf, record, "net1", source=source)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from ..runtime import CNIConfig
from ..spec import CNIError, InvalidNetworkConfig
from ._config import DEFAULT_BIN_DIR, MultusConfig
from ._devices import DeviceAllocator
from ._kube import ClusterSource, PodInfo
from ._plugin import Multus, _Context, _PreferInProcess
from ._record import ADDED, Attachment, PodRecord, PodRecords
from ._selection import NetworkSelection


class DefaultNetworkRemoval(InvalidNetworkConfig):
    """Hot-plug was asked to remove a pod's cluster network (its default attachment)."""


class RecordGoneError(CNIError):
    """The pod sandbox has no record (any more): it was deleted, or never added by pycni."""

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(msg, details, code=3)


def _context(conf: MultusConfig, record: PodRecord, source: ClusterSource | None,
             cni_path: Sequence[str] | None) -> _Context:
    cluster = next((a for a in record.attachments if a.default), None)
    if cni_path is None:
        cni_path = [p for p in (conf.bin_dir or DEFAULT_BIN_DIR).split(":") if p]
    return _Context(
        conf=conf, container_id=record.container_id, netns=record.netns,
        ifname=record.ifname, cni_args=list(cluster.cni_args) if cluster else [],
        pod_namespace=record.pod.get("namespace", ""), pod_name=record.pod.get("name", ""),
        pod_uid=record.pod.get("uid", ""), source=source,
        cni=CNIConfig(list(cni_path), f"{conf.cni_dir}/results", exec_=_PreferInProcess()),
        records=PodRecords(conf.cni_dir))


def _pod(ctx: _Context) -> PodInfo | None:
    # Writing network-status needs the pod's name and UID only: the record has both.
    return PodInfo(ctx.pod_namespace, ctx.pod_name, ctx.pod_uid) if ctx.pod_name else None


def _load(ctx: _Context) -> PodRecord:
    fresh = ctx.records.load(ctx.container_id, ctx.ifname)
    if fresh is None:
        raise RecordGoneError(f"pod {ctx.pod_key}: sandbox {ctx.container_id} has no attachment "
                         "record (it was deleted)")
    return fresh


def next_interface(record: PodRecord) -> str:
    """The lowest ``netN`` the pod does not use."""
    used = {a.interface for a in record.attachments}
    number = 1
    while f"net{number}" in used:
        number += 1
    return f"net{number}"


def add_attachment(conf: MultusConfig, record: PodRecord, selection: NetworkSelection, *,
                   source: ClusterSource | None = None,
                   cni_path: Sequence[str] | None = None,
                   plugin: Multus | None = None) -> PodRecord:
    """Attach the network ``selection`` names to the live pod of ``record``; the updated
    record.

    The interface is ``selection.interface``, else the lowest free ``netN``. Under the
    record's lock the attachment is recorded ``adding``, its delegates run (with the
    selection's runtimeConfig, cni-args and default-route, as at ADD), it becomes ``added``
    and network-status is rewritten. A failure deletes what this call added and raises; the
    pod's other attachments are untouched. Adding a network that is already there on that
    interface does nothing. :class:`RecordGoneError` if the pod's record was deleted meanwhile.
    ``cni_path`` defaults to ``binDir`` (else /opt/cni/bin).
    """
    plugin = plugin or Multus()
    ctx = _context(conf, record, source, cni_path)
    plugin._check_isolation(ctx, selection)
    net, nad = plugin._nad_network(ctx, selection)
    with ctx.records.lock(ctx.container_id, ctx.ifname):
        fresh = _load(ctx)
        interface = selection.interface or next_interface(fresh)
        same = next((a for a in fresh.attachments if a.interface == interface), None)
        if same is not None:
            if same.network == selection.key and same.state == ADDED:
                return fresh
            raise InvalidNetworkConfig(
                f"pod {ctx.pod_key}: interface {interface!r} is taken by network "
                f"{same.network}; cannot add {selection.key} there")
        devices = DeviceAllocator(ctx.pod_uid, plugin.device_checkpoint)
        att = plugin._attachment(ctx, 0, dataclasses.replace(selection, interface=interface),
                                 net=net, nad=nad, devices=devices)
        fresh.attachments.append(att)
        plugin._attach(ctx, fresh, [att], _pod(ctx))
        return fresh


def remove_attachment(conf: MultusConfig, record: PodRecord, interface: str, *,
                      source: ClusterSource | None = None,
                      cni_path: Sequence[str] | None = None,
                      plugin: Multus | None = None) -> PodRecord | None:
    """Detach the network on ``interface`` from the live pod of ``record``; the updated
    record (None when the pod has no record any more).

    Under the record's lock its delegates get DEL; the attachment leaves the record only
    when that DEL succeeded (otherwise the error is raised and the record keeps it for the
    next try or the pod's DEL); network-status is rewritten. An interface the pod does not
    have is success. The cluster network is refused (:class:`DefaultNetworkRemoval`): a
    live switch moves it, hot-plug does not remove it.
    """
    plugin = plugin or Multus()
    ctx = _context(conf, record, source, cni_path)
    with ctx.records.lock(ctx.container_id, ctx.ifname):
        fresh = ctx.records.load(ctx.container_id, ctx.ifname)
        if fresh is None:
            return None
        att: Attachment | None = next(
            (a for a in fresh.attachments if a.interface == interface), None)
        if att is None:
            return fresh
        if att.default:
            raise DefaultNetworkRemoval(
                f"pod {ctx.pod_key}: {interface} is the pod's cluster network "
                f"({att.network}); hot-plug does not remove it")
        netns = fresh.netns if fresh.netns and Path(fresh.netns).exists() else ""
        errors = plugin._detach(ctx, fresh, [att], netns)
        plugin._write_status(ctx, fresh, _pod(ctx))
        if errors:
            first = errors[0]
            raise type(first)(f"pod {ctx.pod_key}: network {att.network} ({interface}) "
                              f"could not be deleted (kept in the record): {first.msg}",
                              first.details, code=first.code)
        return fresh
