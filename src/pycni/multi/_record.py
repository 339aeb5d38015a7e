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
        "config": {...},                          # the exact conflist the delegates got
        "capabilityArgs": {...},                  # this attachment's runtimeConfig
        "cniArgs": [["K8S_POD_NAME", "web-0"], ...],
        "defaultRoute": [],                       # gateways of a "default-route" request
        "deviceID": "",                           # from resourceName, if any
        "result": {...} | null}                   # the delegate chain's result
     ]}

An attachment enters the record (``adding``) *before* its delegates run, so a crash in the
middle of an ADD leaves something for DEL to undo; it leaves the record only when its DEL
succeeded, and the file goes when no attachment is left (Multus#355, #1087, #152). DEL
needs nothing else: not the API server, not the NAD, not the config directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..spec import IOFailure, NetworkConfigList
from ..store import RecordStore

RECORD_VERSION = 1
ADDING = "adding"
ADDED = "added"


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

    def network_config(self) -> NetworkConfigList:
        """The delegate configuration this attachment was added with."""
        return NetworkConfigList.parse(self.config)

    def to_json(self) -> dict[str, Any]:
        """The record's object."""
        return {"network": self.network, "interface": self.interface, "default": self.default,
                "state": self.state, "config": self.config,
                "capabilityArgs": self.capability_args,
                "cniArgs": [list(pair) for pair in self.cni_args],
                "defaultRoute": self.default_route, "deviceID": self.device_id,
                "result": self.result}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Attachment:
        """Read one attachment back (trusting our own writer; KeyError/TypeError if not)."""
        return cls(network=str(obj["network"]), interface=str(obj["interface"]),
                   config=dict(obj["config"]), default=bool(obj.get("default")),
                   state=str(obj.get("state", ADDING)),
                   capability_args=dict(obj.get("capabilityArgs") or {}),
                   cni_args=[(str(k), str(v)) for k, v in obj.get("cniArgs") or []],
                   default_route=[str(g) for g in obj.get("defaultRoute") or []],
                   device_id=str(obj.get("deviceID") or ""), result=obj.get("result"))


@dataclass
class PodRecord:
    """Every attachment of one pod sandbox."""

    container_id: str
    netns: str
    ifname: str
    pod: dict[str, str] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The file's object."""
        return {"version": RECORD_VERSION, "containerID": self.container_id,
                "netns": self.netns, "ifname": self.ifname, "pod": self.pod,
                "attachments": [a.to_json() for a in self.attachments]}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PodRecord:
        """Read a record back; ValueError when it is not one of ours."""
        try:
            return cls(container_id=str(obj["containerID"]), netns=str(obj.get("netns", "")),
                       ifname=str(obj["ifname"]), pod=dict(obj.get("pod") or {}),
                       attachments=[Attachment.from_json(a) for a in obj["attachments"]])
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a pod attachment record: {exc}") from exc


class PodRecords:
    """The records in ``<cniDir>/pods``."""

    def __init__(self, cni_dir: str) -> None:
        self.store = RecordStore(f"{cni_dir}/pods")

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
