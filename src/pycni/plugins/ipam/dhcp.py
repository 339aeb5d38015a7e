"""dhcp: addresses from a DHCP server on the pod's network, through the DHCP daemon.

A lease has to be renewed for as long as the pod lives, so this short-lived plugin only
forwards each call to the daemon (``pycni dhcp daemon``) over its unix socket; the daemon
talks DHCP inside the pod's namespace on the interface the main plugin created. Example
config (macvlan puts the pod on the server's segment)::

    {
      "cniVersion": "1.1.0", "name": "lan", "type": "macvlan", "master": "eth0",
      "ipam": {"type": "dhcp", "daemonSocketPath": "/run/cni/dhcp.sock"}
    }

The ``ipam`` keys (``daemonSocketPath``, ``request``, ``provide``, ``priority``) are
described in :mod:`pycni.ipam.dhcp._config`. DEL succeeds when the daemon is not running (it
cannot release anything then; the lease runs out at the server), STATUS fails with 50 in that
case.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ...ipam.dhcp import DaemonUnreachable, DhcpIpamConfig, call_daemon
from ...skel import CmdArgs, Plugin
from ...spec import (
    DecodingFailure,
    PluginNotAvailable,
    Result,
    TryAgainLater,
    decode_json_object,
)

log = logging.getLogger("pycni.dhcp")


class Dhcp(Plugin):
    """The ``dhcp`` IPAM plugin: a client of the DHCP daemon."""

    type_name = "dhcp"

    @staticmethod
    def _call(command: str, args: CmdArgs) -> dict[str, Any]:
        cfg = DhcpIpamConfig.load(args.conf)
        request = {
            "command": command,
            "containerID": args.container_id,
            # The daemon may run in another working directory.
            "netns": str(Path(args.netns).absolute()) if args.netns else "",
            "ifname": args.ifname,
            "args": args.args,
            "config": decode_json_object(args.stdin, "network config"),
        }
        return call_daemon(cfg.socket_path, request)

    def add(self, args: CmdArgs) -> Result:
        try:
            reply = self._call("ADD", args)
        except DaemonUnreachable as exc:
            raise TryAgainLater(exc.msg, exc.details) from exc
        if not isinstance(reply.get("result"), dict):
            raise DecodingFailure("the DHCP daemon answered ADD without a result")
        return Result.from_json(reply["result"], "1.1.0")

    def delete(self, args: CmdArgs) -> None:
        try:
            self._call("DEL", args)
        except DaemonUnreachable as exc:
            log.warning("dhcp: %s; nothing released", exc)

    def check(self, args: CmdArgs) -> None:
        try:
            self._call("CHECK", args)
        except DaemonUnreachable as exc:
            raise TryAgainLater(exc.msg, exc.details) from exc

    def status(self, args: CmdArgs) -> None:
        try:
            self._call("STATUS", args)
        except DaemonUnreachable as exc:
            raise PluginNotAvailable(exc.msg, exc.details) from exc

    def gc(self, args: CmdArgs) -> None:
        try:
            self._call("GC", args)
        except DaemonUnreachable as exc:
            raise TryAgainLater(exc.msg, exc.details) from exc


main = Dhcp.main
