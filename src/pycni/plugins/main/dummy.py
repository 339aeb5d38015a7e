"""dummy: a dummy link in the container carrying IPAM addresses (no traffic leaves it).

Example config::

    {"cniVersion": "1.1.0", "name": "svc", "type": "dummy",
     "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}}

Keys: ``ipam`` (required), ``dns``. Useful for a stable service address inside a pod.
Needs the kernel's dummy module.
"""

from __future__ import annotations

from ... import host
from ...skel import CmdArgs
from ...spec import KernelError
from ._common import ipam_type
from ._linkplugin import LinkConf, SubLinkPlugin


class Dummy(SubLinkPlugin):
    """The ``dummy`` plugin."""

    type_name = "dummy"
    kind = "dummy"

    def load(self, args: CmdArgs, *, resolve: bool) -> LinkConf:  # noqa: ARG002 - no master
        return LinkConf(link=host.SubLink(kind="dummy"), ipam_type=ipam_type(args))

    def check_details(self, conf: LinkConf,  # noqa: ARG002 - nothing to compare
                      details: host.LinkInfo) -> None:
        if not details.up:
            raise KernelError("CHECK: the container's dummy interface is down")


main = Dummy.main
