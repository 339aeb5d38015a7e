"""``conditionsV4``/``conditionsV6``: extra matches on the DNAT rules, parsed, never pasted.

Both backends write rules as text (an iptables-restore batch, an nft script), so a condition
pasted as given could end the rule and start another (a newline, ``;``, ``flush ruleset``).
Each backend therefore accepts a small grammar and writes what it parsed:

* iptables: an argument list of matches, as the reference plugin passes them to iptables:
  ``[!] -s/-d ADDR[,ADDR...]``, ``[!] -i/-o IFNAME``, ``[!] -p PROTO`` and ``-m MODULE`` with
  that module's ``[!] --option [VALUE...]``. Targets, commands and tables (``-j``, ``-A``,
  ``-t``, and any abbreviation of their long forms) are refused.
* nftables: ``ip|ip6 saddr|daddr [==|!=] ADDR`` and ``iifname|oifname [==|!=] NAME``,
  written back from the parsed address or name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from ....spec import InvalidNetworkConfig

_IPT_ADDRESS = ("-s", "--source", "-d", "--destination")
_IPT_IFNAME = ("-i", "--in-interface", "-o", "--out-interface")
_IPT_WORD = ("-p", "--protocol", "-m", "--match")
#: Long options of iptables itself (commands, targets, table, flags): a module option may
#: not be one of these or an abbreviation of one (getopt_long accepts unique prefixes).
_IPT_RESERVED = ("append", "check", "delete", "delete-chain", "exact", "flush", "fragment",
                 "goto", "help", "insert", "ipv4", "ipv6", "jump", "line-numbers", "list",
                 "list-rules", "modprobe", "new-chain", "numeric", "policy", "rename-chain",
                 "replace", "set-counters", "table", "verbose", "version", "wait",
                 "wait-interval", "zero")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
#: An interface name as iptables and nftables match it: 1-15 bytes, a trailing ``+``
#: (iptables) or ``*`` (nftables) matches every name with that prefix.
_IFNAME = re.compile(r"[A-Za-z0-9_.:@\-]{1,15}\Z")


def _bad(key: str, what: str) -> InvalidNetworkConfig:
    return InvalidNetworkConfig(f'invalid "{key}": {what}')


def _printable(key: str, tokens: Sequence[str]) -> None:
    for token in tokens:
        if not token.isprintable():
            raise _bad(key, f"{token!r} contains a control character (a condition is one "
                            "match, not rule text)")


def _address(key: str, value: str, family: int) -> str:
    try:
        nets = [ipaddress.ip_network(v, strict=False) for v in value.split(",")]
    except ValueError as exc:
        raise _bad(key, f"{value!r} is not an IP address or network") from exc
    if any(n.version != family for n in nets):
        raise _bad(key, f"{value!r} is not an IPv{family} address")
    return value


def _ifname(key: str, value: str, wildcard: str) -> str:
    if not _IFNAME.match(value.removesuffix(wildcard)) or value in (".", ".."):
        raise _bad(key, f"{value!r} is not an interface name")
    return value


def iptables_conditions(tokens: Sequence[str], family: int, key: str) -> tuple[str, ...]:
    """Check an iptables match list; the tokens are returned unchanged (each one argument)."""
    _printable(key, tokens)
    i, module = 0, False
    while i < len(tokens):
        if tokens[i] == "!":
            i += 1
            if i == len(tokens):
                raise _bad(key, "'!' must be followed by a match")
        opt = tokens[i]
        i += 1
        if opt in _IPT_ADDRESS or opt in _IPT_IFNAME or opt in _IPT_WORD:
            if i == len(tokens):
                raise _bad(key, f"{opt} needs a value")
            value = tokens[i]
            i += 1
            if opt in _IPT_ADDRESS:
                _address(key, value, family)
            elif opt in _IPT_IFNAME:
                _ifname(key, value, "+")
            elif not _WORD.match(value):
                raise _bad(key, f"{value!r} is not a valid {opt} value")
            module = module or opt in ("-m", "--match")
        elif opt.startswith("--") and len(opt) > 2 and _WORD.match(opt[2:]):
            if not module:
                raise _bad(key, f"{opt} is a match option: give its module with -m first")
            if any(r.startswith(opt[2:]) for r in _IPT_RESERVED):
                raise _bad(key, f"{opt} is not a match option (targets, commands and tables "
                                "cannot be set)")
            while i < len(tokens) and tokens[i] != "!" and not tokens[i].startswith("-"):
                i += 1
        else:
            raise _bad(key, f"{opt!r} is not a supported match (expected -s, -d, -i, -o, -p, "
                            "-m MODULE and its --options, each optionally after '!')")
    return tuple(tokens)


def nftables_conditions(tokens: Sequence[str], family: int, key: str) -> tuple[str, ...]:
    """Parse nftables matches; the result is the rule text rebuilt from the parsed parts,
    one expression per item."""
    _printable(key, tokens)
    words = [w for token in tokens for w in token.split(" ") if w]
    fam = "ip" if family == 4 else "ip6"
    out: list[str] = []
    i = 0
    while i < len(words):
        if words[i] == fam and i + 1 < len(words) and words[i + 1] in ("saddr", "daddr"):
            field, kind = f"{fam} {words[i + 1]}", "address"
            i += 2
        elif words[i] in ("iifname", "oifname"):
            field, kind = words[i], "ifname"
            i += 1
        else:
            raise _bad(key, f"unsupported nftables match at {words[i]!r} (expected "
                            f"'{fam} saddr|daddr [!=] ADDRESS' or 'iifname|oifname [!=] NAME')")
        op = ""
        if i < len(words) and words[i] in ("==", "!="):
            op = "!= " if words[i] == "!=" else ""
            i += 1
        if i == len(words):
            raise _bad(key, f"{field} needs a value")
        value = words[i]
        i += 1
        if kind == "address":
            nets = _address(key, value, family).split(",")
            rendered = str(ipaddress.ip_network(nets[0], strict=False))
            if len(nets) > 1:
                raise _bad(key, f"{value!r}: one address or network per nftables match")
        else:
            rendered = '"' + _ifname(key, value.strip('"'), "*") + '"'
        out.append(f"{field} {op}{rendered}")
    return tuple(out)
