"""Network sysctls of the calling thread's namespace, through /proc/sys/net.

Every ``/proc/sys/net`` file belongs to the network namespace of the task that opens it,
and that is per thread: run these inside ``NetNS.call`` to reach a container's settings.
Names use ``/`` as the separator (``net/ipv6/conf/eth0.100/accept_dad``) so interface names
may contain dots.
"""

from __future__ import annotations

import os

from ..spec import KernelError

# Plain fd I/O, not open(): a buffered text file costs each access 9-12 system calls (fstat
# twice, isatty, two lseeks, a second read for EOF) where the kernel needs three. A /proc/sys
# value is a short line produced whole by the first read; a longer one is read to its end.
_CHUNK = 4096


def _path(name: str) -> str:
    if ".." in name.split("/"):
        raise KernelError(f"invalid sysctl name {name!r}")
    return "/proc/sys/" + name.lstrip("/")


def sysctl_get(name: str) -> str:
    """The value of sysctl ``name`` (stripped), KernelError if it cannot be read."""
    try:
        fd = os.open(_path(name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = chunk = os.read(fd, _CHUNK)
            while len(chunk) == _CHUNK:
                chunk = os.read(fd, _CHUNK)
                data += chunk
        finally:
            os.close(fd)
        return data.decode().strip()
    except OSError as exc:
        raise KernelError(f"failed to read sysctl {name}: {exc.strerror or exc}") from exc


def _write(name: str, value: str) -> None:
    try:
        fd = os.open(_path(name), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise KernelError(f"failed to set sysctl {name}={value}: {exc.strerror or exc}") from exc


def sysctl_set(name: str, value: str) -> None:
    """Write ``value`` to sysctl ``name`` unless it already has it (so a setting that is
    already right needs no write access: ``/proc/sys`` may be mounted read-only)."""
    try:
        if sysctl_get(name) == value:
            return
    except KernelError:
        pass  # the write below reports the real problem
    _write(name, value)


def sysctl_try_set(name: str, value: str) -> bool:
    """Best-effort write of ``value`` to sysctl ``name``; True if it was written.

    Written without reading first, as the reference plugins do with the settings they
    ignore errors of (mostly those of a link the call just made, whose value is the
    default): a read would only add three system calls. The write also marks an IPv4
    per-device setting as set, so later changes of ``conf/default`` leave it alone, as they
    do for the reference's links.
    """
    try:
        _write(name, value)
    except KernelError:
        return False
    return True


def enable_forwarding(family: int) -> None:
    """Turn on IPv4 (``ip_forward``) or IPv6 (``conf/all/forwarding``) routing."""
    if family == 4:
        sysctl_set("net/ipv4/ip_forward", "1")
    else:
        sysctl_set("net/ipv6/conf/all/forwarding", "1")
