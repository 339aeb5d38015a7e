"""Reading a host ``resolv.conf`` into a result's DNS section (host-local ``resolvConf``)."""

from __future__ import annotations

from ..spec import DNS, IOFailure


def parse_resolv_conf(path: str, field: str = "resolvConf") -> DNS:
    """``nameserver``, ``domain``, ``search`` and ``options`` lines of ``path``, in order.

    Comment lines start with ``#`` or ``;``; a keyword without a value is skipped, and a
    later ``domain`` replaces an earlier one, as in the reference and the resolver itself.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise IOFailure(f'cannot read "{field}" {path!r}', str(exc)) from exc
    dns = DNS()
    for raw in lines:
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, *values = line.split()
        if not values:
            continue
        if key == "nameserver":
            dns.nameservers.append(values[0])
        elif key == "domain":
            dns.domain = values[0]
        elif key == "search":
            dns.search.extend(values)
        elif key == "options":
            dns.options.extend(values)
    return dns
