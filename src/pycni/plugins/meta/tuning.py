"""tuning: set namespaced sysctls and link attributes of the container interface.

Example config (chained after a main plugin)::

    {"type": "tuning", "sysctl": {"net.core.somaxconn": "500",
                                  "net.ipv4.conf.IFNAME.arp_filter": "1"},
     "mac": "c2:b0:57:49:47:f1", "mtu": 1454, "promisc": true, "allmulti": true,
     "txQLen": 2000}

Sysctl keys must be under ``net.`` and are written inside the container's namespace;
``IFNAME`` in a key becomes CNI_IFNAME. When ``/etc/cni/tuning/allowlist.conf`` exists
(``sysctlAllowlist`` points elsewhere) every key must match one of its regular expressions.
The MAC may also come from CNI_ARGS ``MAC``, ``runtimeConfig.mac`` (capability ``mac``) and
``args.cni``, which also overrides ``mtu``, ``promisc``, ``allmulti``, ``txQLen`` and adds to
``sysctl``. ADD saves the link's original values to ``<dataDir>/<containerID>_<ifname>.json``
(default ``/run/cni/tuning``, like the reference) and DEL puts them back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...host import (
    LinkInfo,
    NetNSNotFound,
    Undo,
    require_link,
    send_gratuitous_arp,
    set_link_attrs,
    sysctl_get,
    sysctl_set,
)
from ...host import enter as enter_netns
from ...skel import CmdArgs, Plugin
from ...spec import InvalidNetworkConfig, IOFailure, KernelError, Result
from ...store import RecordStore
from .._fields import (
    UINT32_MAX,
    int_field,
    mtu_field,
    opt_bool,
    require_prev_result,
    str_default,
    str_field,
    valid_attachments,
)

DEFAULT_DATA_DIR = "/run/cni/tuning"
DEFAULT_ALLOWLIST = "/etc/cni/tuning/allowlist.conf"
_MAC_RE = re.compile(r"^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}\Z")


def _mac(value: str, where: str) -> str:
    if not _MAC_RE.match(value):
        raise InvalidNetworkConfig(f"invalid MAC address {value!r} in {where}")
    return value.lower().replace("-", ":")


@dataclass
class TuningConfig:
    """The effective settings after CNI_ARGS, runtimeConfig and args.cni overrides."""

    data_dir: str = DEFAULT_DATA_DIR
    allowlist: str = DEFAULT_ALLOWLIST
    sysctl: dict[str, str] = field(default_factory=dict)
    mac: str | None = None
    mtu: int | None = None
    promisc: bool = False
    allmulti: bool | None = None
    txqlen: int | None = None

    @classmethod
    def load(cls, args: CmdArgs) -> TuningConfig:
        """Parse and merge in the reference's order: config, CNI_ARGS, runtimeConfig, args."""
        raw = args.conf.raw
        conf = cls(data_dir=str_default(raw, "dataDir", DEFAULT_DATA_DIR),
                   allowlist=str_default(raw, "sysctlAllowlist", DEFAULT_ALLOWLIST))
        conf._apply(raw, "")
        mac_arg = args.cni_args(["MAC"]).get("MAC")
        if mac_arg:
            conf.mac = _mac(mac_arg, "CNI_ARGS")
        rc_mac = str_field(args.conf.runtime_config, "mac", what="runtimeConfig.")
        if rc_mac:
            conf.mac = _mac(rc_mac, "runtimeConfig.mac")
        cni = args.conf.cni_args()
        if cni:
            conf._apply(cni, "args.cni.")
        return conf

    def _apply(self, raw: dict[str, Any], what: str) -> None:
        sysctl = raw.get("sysctl")
        if sysctl is not None:
            if not isinstance(sysctl, dict) or not all(isinstance(v, str)
                                                       for v in sysctl.values()):
                raise InvalidNetworkConfig(f'invalid "{what}sysctl": expected an object of '
                                           "strings")
            self.sysctl.update(sysctl)
        mac = str_field(raw, "mac", what=what)
        if mac:
            self.mac = _mac(mac, f"{what}mac")
        mtu = mtu_field(raw, what=what)
        if mtu:
            self.mtu = mtu
        promisc = opt_bool(raw, "promisc")
        if promisc is not None:
            self.promisc = promisc
        allmulti = opt_bool(raw, "allmulti")
        if allmulti is not None:
            self.allmulti = allmulti
        txqlen = int_field(raw, "txQLen", maximum=UINT32_MAX, what=what)
        if txqlen is not None:
            self.txqlen = txqlen

    @property
    def changes_link(self) -> bool:
        """Whether any link attribute is configured (and so a backup is needed)."""
        return (self.mac is not None or self.mtu is not None or self.promisc
                or self.allmulti is not None or self.txqlen is not None)

    def sysctl_paths(self, ifname: str) -> dict[str, str]:
        """/proc path -> value for every key, with IFNAME substituted (see :func:`sysctl_key`)."""
        return {f"/proc/sys/{'/'.join(sysctl_key(k, ifname))}": v
                for k, v in self.sysctl.items()}

    def check_allowlist(self, ifname: str) -> None:
        """Every key, as it is written (IFNAME substituted), must match a line of the
        allow-list; ``IFNAME`` in a pattern stands for this attachment's interface name."""
        try:
            with open(self.allowlist) as fh:
                lines = [line.strip() for line in fh if line.strip()]
        except FileNotFoundError:
            return
        except OSError as exc:
            raise IOFailure(f"cannot read sysctl allow-list {self.allowlist}: "
                            f"{exc.strerror}") from exc
        patterns = []
        for line in lines:
            try:
                patterns.append(re.compile(line.replace("IFNAME", re.escape(ifname))))
            except re.error as exc:
                raise InvalidNetworkConfig(f"invalid pattern {line!r} in sysctl allow-list "
                                           f"{self.allowlist}: {exc}") from exc
        for key in self.sysctl:
            written = ".".join(sysctl_key(key, ifname))
            if not any(p.search(written) for p in patterns):
                raise InvalidNetworkConfig(f"sysctl {key} is not allowed",
                                           f"{self.allowlist} allows only {lines}")


def sysctl_key(key: str, ifname: str) -> list[str]:
    """The components of the key that is written: ``IFNAME`` replaced, each checked.

    A key is dotted (``net.ipv4.conf.eth0.rp_filter``) or, when it holds a ``/``, a path
    under /proc/sys (``net/ipv4/conf/eth0.100/rp_filter``, for names with dots). Empty,
    ``.`` and ``..`` components are refused rather than normalised away: a path that walks
    back up could leave ``net`` or reach a key the allow-list never saw.
    """
    parts = key.split("/") if "/" in key else key.split(".")
    bad = [p for p in parts if p in ("", ".", "..") or not p.isprintable()
           or any(c.isspace() for c in p)]
    if bad or parts[0] != "net" or len(parts) < 2:
        raise InvalidNetworkConfig(f"invalid net sysctl key: {key!r}",
                                   "expected a key under net. (/proc/sys/net), without empty, "
                                   "'.' or '..' components")
    return [p.replace("IFNAME", ifname) for p in parts]


def _store(conf: TuningConfig) -> RecordStore:
    return RecordStore(conf.data_dir)


def _teardown_store(args: CmdArgs) -> RecordStore:
    """The backups' directory for DEL and GC, which read no other key (a ``dataDir`` that
    is not a string means the default: ADD refused it)."""
    data_dir = args.conf.raw.get("dataDir")
    return RecordStore(data_dir if isinstance(data_dir, str) and data_dir
                       else DEFAULT_DATA_DIR)


def _save_backup(conf: TuningConfig, args: CmdArgs, current: LinkInfo) -> None:
    # "network" is ours (the reference keeps only the attributes): GC uses it so one
    # network's GC never drops another network's backups.
    saved: dict[str, Any] = {"network": args.conf.name}
    if conf.mac is not None:
        saved["mac"] = current.mac
    if conf.promisc:
        saved["promisc"] = current.promisc
    if conf.mtu is not None:
        saved["mtu"] = current.mtu
    if conf.allmulti is not None:
        saved["allmulti"] = current.allmulti
    if conf.txqlen is not None:
        saved["txQLen"] = current.txqlen
    try:
        _store(conf).save(args.container_id, args.ifname, saved)
    except OSError as exc:
        raise IOFailure(f"failed to write {exc.filename}: {exc.strerror}") from exc


def _apply_in_netns(conf: TuningConfig, args: CmdArgs, result: Result) -> None:
    for path, value in conf.sysctl_paths(args.ifname).items():
        sysctl_set(path.removeprefix("/proc/sys/"), value)
    if not conf.changes_link:
        return
    _save_backup(conf, args, require_link(args.ifname))
    set_link_attrs(args.ifname, mac=conf.mac, promisc=True if conf.promisc else None,
                   mtu=conf.mtu, allmulti=conf.allmulti, txqlen=conf.txqlen)
    if conf.mac is not None:
        send_gratuitous_arp(args.ifname, [ipc.address.ip for ipc in result.ips])


def _restore_in_netns(path: Path, ifname: str) -> None:
    saved = RecordStore.load(path)
    if saved is None:
        return
    try:
        current = require_link(ifname)
    except KernelError:
        current = None
    if current is not None and set(saved) - {"network"}:
        set_link_attrs(ifname, mtu=saved.get("mtu"), mac=saved.get("mac"),
                       promisc=saved.get("promisc"), allmulti=saved.get("allmulti"),
                       txqlen=saved.get("txQLen"))
    RecordStore.remove(path)


class Tuning(Plugin):
    """The ``tuning`` plugin."""

    type_name = "tuning"

    def add(self, args: CmdArgs) -> Result:
        conf = TuningConfig.load(args)
        prev = require_prev_result(args, "required prevResult missing")
        conf.sysctl_paths(args.ifname)  # rejects malformed and non-net keys before any change
        conf.check_allowlist(args.ifname)
        with enter_netns(args.netns) as ns, Undo() as undo:
            if conf.changes_link:
                # Whatever part of the link change happened, from the backup ADD writes first.
                undo.push(f"restore the attributes of {args.ifname}", ns.call,
                          _restore_in_netns, _store(conf).path(args.container_id, args.ifname),
                          args.ifname)
            ns.call(_apply_in_netns, conf, args, prev)
        if conf.mac is not None:
            for iface in prev.interfaces:
                if iface.name == args.ifname:
                    iface.mac = conf.mac
        return prev

    def delete(self, args: CmdArgs) -> None:
        # The backup says what to restore; of the config only its directory is needed.
        path = _teardown_store(args).path(args.container_id, args.ifname)
        try:
            with enter_netns(args.netns) as ns:
                ns.call(_restore_in_netns, path, args.ifname)
        except NetNSNotFound:
            # The interface went with its namespace; nothing is left to restore.
            RecordStore.remove(path)

    def check(self, args: CmdArgs) -> None:
        conf = TuningConfig.load(args)
        require_prev_result(args, "required prevResult missing")
        with enter_netns(args.netns) as ns:
            for path, want in conf.sysctl_paths(args.ifname).items():
                have = ns.call(sysctl_get, path.removeprefix("/proc/sys/"))
                if have != want:
                    raise KernelError(f"tuning configured value of {path} is {want}, current "
                                      f"value is {have}")
            attrs = ns.call(require_link, args.ifname)
        wanted: dict[str, tuple[object, object]] = {
            "MAC address": (conf.mac, attrs.mac), "MTU": (conf.mtu, attrs.mtu),
            "promiscuous mode": (conf.promisc, attrs.promisc),
            "all-multicast mode": (conf.allmulti, attrs.allmulti),
            "txQLen": (conf.txqlen, attrs.txqlen)}
        for name, (want_attr, have_attr) in wanted.items():
            if want_attr is not None and want_attr != have_attr:
                raise KernelError(f"tuning configured {name} of {args.ifname} is {want_attr}, "
                                  f"current value is {have_attr}")

    def gc(self, args: CmdArgs) -> None:
        """Drop this network's backups of attachments that are gone."""
        store = _teardown_store(args)
        keep = {store.path(cid, ifname) for cid, ifname in valid_attachments(args.conf.raw)}
        for path in store.records():
            saved = RecordStore.load(path)
            if path not in keep and saved is not None and saved.get("network") == args.conf.name:
                RecordStore.remove(path)


main = Tuning.main
