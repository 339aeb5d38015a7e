"""Network sysctls of the calling thread's namespace, through /proc/sys/net.

Every ``/proc/sys/net`` file belongs to the network namespace of the task that opens it,
and that is per thread: run these inside ``NetNS.call`` to reach a container's settings.
Names use ``/`` as the separator (``net/ipv6/conf/eth0.100/accept_dad``) so interface names
may contain dots.
"""

from __future__ import annotations

from ..spec import KernelError


def _path(name: str) -> str:
    if ".." in name.split("/"):
        raise KernelError(f"invalid sysctl name {name!r}")
    return "/proc/sys/" + name.lstrip("/")


def sysctl_get(name: str) -> str:
    """The value of sysctl ``name`` (stripped), KernelError if it cannot be read."""
    try:
        with open(_path(name)) as fh:
            return fh.read().strip()
    except OSError as exc:
        raise KernelError(f"failed to read sysctl {name}: {exc.strerror or exc}") from exc


def sysctl_set(name: str, value: str) -> None:
    """Write ``value`` to sysctl ``name`` unless it already has it."""
    try:
        if sysctl_get(name) == value:
            return
    except KernelError:
        pass  # the write below reports the real problem
    try:
        with open(_path(name), "w") as fh:
            fh.write(value)
    except OSError as exc:
        raise KernelError(f"failed to set sysctl {name}={value}: {exc.strerror or exc}") from exc


def sysctl_try_set(name: str, value: str) -> bool:
    """Best-effort :func:`sysctl_set` (the reference plugins ignore these errors); True if set."""
    try:
        sysctl_set(name, value)
    except KernelError:
        return False
    return True


def enable_forwarding(family: int) -> None:
    """Turn on IPv4 (``ip_forward``) or IPv6 (``conf/all/forwarding``) routing."""
    if family == 4:
        sysctl_set("net/ipv4/ip_forward", "1")
    else:
        sysctl_set("net/ipv6/conf/all/forwarding", "1")
