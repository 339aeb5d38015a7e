"""The per-pod attachment record: what the meta plugin attached, with the configs it used.

One JSON file per pod sandbox, ``<cniDir>/pods/<containerID>_<ifname>.json`` (``ifname`` is
the cluster network's, usually ``eth0``), written atomically (:class:`pycni.store.RecordStore`)
at every step, so a reader sees the state before or after a step, never half of one::

    {"version": 1,
     "containerID": "...", "netns": "/var/run/netns/...", "ifname": "eth0",
     "pod": {"namespace": "ns", "name": "web-0", "uid": "..."},
     "attachments": [
       {"network": "kube-system/pod-net", "interface": "eth0", "default": true,
        "state": "added",                         # "adding" until its ADD returned
                                                  # ("switching", "orphaned": below)
        "config": {...},                          # the exact conflist the delegates got
        "capabilityArgs": {...},                  # this attachment's runtimeConfig
        "cniArgs": [["K8S_POD_NAME", "web-0"], ...],
        "defaultRoute": [],                       # gateways of a "default-route" request
        "deviceID": "",                           # from resourceName, if any
        "result": {...} | null,                   # the delegate chain's result
        "switch": {...}}                          # a live switch's intent (below)
     ]}

An attachment enters the record (``adding``) *before* its delegates run, so a crash in the
middle of an ADD leaves something for DEL to undo; it leaves the record only when its DEL
succeeded, and the file goes when no attachment is left (Multus#355, #1087, #152). DEL
needs nothing else: not the API server, not the NAD, not the config directory.

Every change to a record happens under its lock (:meth:`PodRecords.lock`): ``flock`` on
``<containerID>_<ifname>.lock`` beside it, so the runtime's ADD/DEL, hot-plug in the agent
and ``pycni migrate`` never interleave on one pod, whichever process runs them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..spec import IOFailure, NetworkConfigList
from ..store import RecordStore

RECORD_VERSION = 1
ADDING = "adding"
ADDED = "added"
SWITCHING = "switching"
ORPHANED = "orphaned"


@dataclass
class Attachment:
    """One network of a pod (see the module docstring for the wire names)."""

    network: str
    interface: str
    config: dict[str, Any]
    default: bool = False
    state: str = ADDING
    capability_args: dict[str, Any] = field(default_factory=dict)
    cni_args: list[tuple[str, str]] = field(default_factory=list)
    default_route: list[str] = field(default_factory=list)
    device_id: str = ""
    result: dict[str, Any] | None = None
    #: A live switch's intent while ``switching`` (see the module docstring).
    switch: dict[str, Any] | None = None

    def network_config(self) -> NetworkConfigList:
        """The delegate configuration this attachment was added with."""
        return NetworkConfigList.parse(self.config)

    def to_json(self) -> dict[str, Any]:
        """The record's object."""
        out = {"network": self.network, "interface": self.interface, "default": self.default,
               "state": self.state, "config": self.config,
               "capabilityArgs": self.capability_args,
               "cniArgs": [list(pair) for pair in self.cni_args],
               "defaultRoute": self.default_route, "deviceID": self.device_id,
               "result": self.result}
        if self.switch is not None:
            out["switch"] = self.switch
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Attachment:
        """Read one attachment back (trusting our own writer; KeyError/TypeError if not)."""
        return cls(network=str(obj["network"]), interface=str(obj["interface"]),
                   config=dict(obj["config"]), default=bool(obj.get("default")),
                   state=str(obj.get("state", ADDING)),
                   capability_args=dict(obj.get("capabilityArgs") or {}),
                   cni_args=[(str(k), str(v)) for k, v in obj.get("cniArgs") or []],
                   default_route=[str(g) for g in obj.get("defaultRoute") or []],
                   device_id=str(obj.get("deviceID") or ""), result=obj.get("result"),
                   switch=dict(obj["switch"]) if obj.get("switch") else None)


@dataclass
class PodRecord:
    """Every attachment of one pod sandbox."""

    container_id: str
    netns: str
    ifname: str
    pod: dict[str, str] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    #: Proxy ARP/NDP entries a live switch made for the pod's address on the segment it
    #: left (``{"device": "cni0", "address": "10.1.0.5"}``); removed at its DEL.
    proxies: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The file's object."""
        out = {"version": RECORD_VERSION, "containerID": self.container_id,
               "netns": self.netns, "ifname": self.ifname, "pod": self.pod,
               "attachments": [a.to_json() for a in self.attachments]}
        if self.proxies:
            out["proxies"] = self.proxies
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PodRecord:
        """Read a record back; ValueError when it is not one of ours."""
        try:
            return cls(container_id=str(obj["containerID"]), netns=str(obj.get("netns", "")),
                       ifname=str(obj["ifname"]), pod=dict(obj.get("pod") or {}),
                       attachments=[Attachment.from_json(a) for a in obj["attachments"]],
                       proxies=[{"device": str(p["device"]), "address": str(p["address"])}
                                for p in obj.get("proxies") or []])
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a pod attachment record: {exc}") from exc


class _Held:
    """One lock file as this process holds it: threads queue on ``rlock``; the first
    (outermost) holder takes the flock, which other processes see."""

    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd = -1
        self.users = 0


_HELD: dict[str, _Held] = {}
_HELD_GUARD = threading.Lock()


def _flock(path: Path) -> int:
    """An fd holding an exclusive flock on ``path`` as it is now on disk.

    The last holder unlinks the file when the record is gone; a waiter that opened the old
    file then holds a lock nobody else can see, so it checks the inode and tries again.
    """
    while True:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = path.stat().st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)


class PodRecords:
    """The records in ``<cniDir>/pods``."""

    def __init__(self, cni_dir: str) -> None:
        self.store = RecordStore(f"{cni_dir}/pods")

    @contextlib.contextmanager
    def lock(self, container_id: str, ifname: str) -> Iterator[None]:
        """Hold the pod record's lock (re-entrant within a thread; see the module
        docstring). Load the record after taking it: another holder may have changed it.
        When the outermost holder leaves and the record is gone, the lock file goes too."""
        record = self.store.path(container_id, ifname)
        path = record.with_suffix(".lock")
        key = str(path)
        with _HELD_GUARD:
            held = _HELD.setdefault(key, _Held())
            held.users += 1
        try:
            with held.rlock:
                if held.depth == 0:
                    try:
                        held.fd = _flock(path)
                    except OSError as exc:
                        raise IOFailure(f"cannot lock the attachment record {path}",
                                        exc.strerror or str(exc)) from exc
                held.depth += 1
                try:
                    yield
                finally:
                    held.depth -= 1
                    if held.depth == 0:
                        if not record.exists():
                            RecordStore.remove(path)
                            self.store.prune()
                        os.close(held.fd)
                        held.fd = -1
        finally:
            with _HELD_GUARD:
                held.users -= 1
                if held.users == 0:
                    del _HELD[key]

    def load(self, container_id: str, ifname: str) -> PodRecord | None:
        """The pod's record, None if there is none; IOFailure if it is unreadable."""
        path = self.store.path(container_id, ifname)
        obj = RecordStore.load(path)
        if obj is None:
            return None
        try:
            return PodRecord.from_json(obj)
        except ValueError as exc:
            raise IOFailure(f"the attachment record {path} is unreadable",
                            f"{exc}; remove it by hand once the pod's networks are gone"
                            ) from exc

    def save(self, record: PodRecord) -> None:
        """Write the record atomically; IOFailure naming the file."""
        try:
            self.store.save(record.container_id, record.ifname, record.to_json())
        except OSError as exc:
            raise IOFailure(f"cannot write the attachment record {exc.filename}",
                            exc.strerror or str(exc)) from exc

    def remove(self, container_id: str, ifname: str) -> None:
        """Drop the record (all its attachments are gone)."""
        RecordStore.remove(self.store.path(container_id, ifname))
        self.store.prune()

    def find(self, namespace: str, name: str, uid: str = "") -> list[PodRecord]:
        """The records of one pod (of that UID, when given): usually one, its sandbox."""
        return [r for r in self.all()
                if r.pod.get("namespace") == namespace and r.pod.get("name") == name
                and (not uid or not r.pod.get("uid") or r.pod.get("uid") == uid)]

    def all(self) -> list[PodRecord]:
        """Every readable record (GC walks them)."""
        out = []
        for path in self.store.records():
            obj = RecordStore.load(path)
            if obj:
                try:
                    out.append(PodRecord.from_json(obj))
                except ValueError:
                    continue
        return out
