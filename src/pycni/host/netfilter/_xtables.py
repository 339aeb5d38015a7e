"""iptables through its executables: the one runner, and the ``nat`` table in batches.

:func:`run` starts an iptables tool (iptables-nft or legacy, argv never a shell) in the calling
thread's netns; every iptables user goes through it (the firewall plugin's filter rules,
masquerading and port mapping).

The nat table is read once with ``iptables-save -t nat`` (which, unlike most iptables
commands under iptables-nft, never creates the table it lists) and written with one
``iptables-restore -w --noflush`` batch, so other tools never see half-written chains and a
call costs two processes instead of one per rule. Rules are kept as the argv that
iptables-save prints, so "is this rule there" is a list comparison.

Concurrent transactions on one family's nat table in one namespace are merged
(:mod:`pycni.host._burst`): the table is read once, each plan runs against the table as the plans
before it left it (:meth:`NatTable.apply`), and one restore applies them all.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..._record import FrozenRecord, set_fields
from ...spec import KernelError
from .._burst import BurstCounters, Combiner, netns_key

#: (save, restore) executables per address family.
TOOLS = {4: ("iptables-save", "iptables-restore"), 6: ("ip6tables-save", "ip6tables-restore")}
#: The comment match's buffer is 256 bytes with its NUL: iptables keeps at most 255 bytes of a
#: ``--comment`` (iptables 1.8 cuts a longer one silently, so the rule it lists is not the one
#: it was given).
COMMENT_MAX = 255


def stored_comment(text: str) -> str:
    """``text`` as iptables stores it in a rule: its first :data:`COMMENT_MAX` bytes.

    A plugin that writes this form finds its rule again by text, and writes the very rule
    iptables made of a reference plugin's longer comment.
    """
    return text.encode()[:COMMENT_MAX].decode(errors="ignore")



# iptables-save prints a word bare, or in double quotes with ``"`` and ``\\`` escaped.
_WORD = re.compile(r'(?:[^ \t\r\n"\'\\]+|"(?:[^"\\]|\\.)*")+', re.DOTALL)
_BLANK = " \t\r\n"  # shlex's whitespace (str.strip's would also take \f, \v, ...)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPED = re.compile(r'\\(["\\])')


def _unquote(quoted: re.Match[str]) -> str:
    return _ESCAPED.sub(r"\1", quoted.group(1))


def split_rule(line: str) -> list[str]:
    """``shlex.split(line)``, several times faster for what iptables-save prints.

    With a hundred pods, the nat table is read on every ADD and DEL and has hundreds of
    rules; shlex took ~20 ms of CPU for them. Lines with single quotes or backslashes
    outside double quotes go to shlex itself (ValueError for unbalanced quotes, as there).
    """
    words: list[str] = []
    end = 0
    for match in _WORD.finditer(line):
        if line[end:match.start()].strip(_BLANK):
            return shlex.split(line)
        end = match.end()
        word = match.group()
        if '"' in word:
            word = _QUOTED.sub(_unquote, word)
        words.append(word)
    if line[end:].strip(_BLANK):
        return shlex.split(line)
    return words


@dataclass
class NatTable:
    """The parsed ``iptables-save -t nat`` of one family: chains and their rules' argv."""

    chains: set[str] = field(default_factory=set)
    rules: dict[str, list[list[str]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NatTable:
        """Read iptables-save output (only its ``*nat`` part)."""
        table = cls()
        current = None
        for line in text.splitlines():
            if line.startswith("*"):
                current = line[1:].strip()
            elif current != "nat" or not line or line.startswith("#"):
                continue
            elif line.startswith(":"):
                name = line[1:].split()[0]
                table.chains.add(name)
                table.rules.setdefault(name, [])
            elif line.startswith("-A "):
                try:
                    argv = split_rule(line)
                except ValueError:  # another tool's odd quoting: not one of our rules
                    argv = line.split()
                table.rules.setdefault(argv[1], []).append(argv[2:])
        return table

    def apply(self, lines: Sequence[str]) -> None:
        """Change the model as ``iptables-restore --noflush`` would with these lines.

        The lines :func:`rule_line` makes and chain declarations (``:CHAIN``, which in a
        noflush batch creates the chain or empties it); anything else is a ValueError.
        """
        for line in lines:
            if line.startswith(":"):
                name = line[1:].split()[0]
                self.chains.add(name)
                self.rules[name] = []
                continue
            op, chain, *argv = split_rule(line)
            rules = self.rules.setdefault(chain, [])
            if op == "-A":
                rules.append(argv)
            elif op == "-I":
                at = int(argv.pop(0)) - 1 if argv and argv[0].isdigit() else 0
                rules.insert(at, argv)
            elif op == "-D":
                if argv in rules:  # else the restore fails, and the model no longer matters
                    rules.remove(argv)
            elif op == "-N":
                self.chains.add(chain)
                rules.clear()
            elif op == "-F":
                rules.clear()
            elif op == "-X":
                self.chains.discard(chain)
                del self.rules[chain]
            else:
                raise ValueError(f"no model for restore line {line!r}")

    def jumps_to(self, chain: str, hook: str = "POSTROUTING") -> list[list[str]]:
        """The rules of ``hook`` that jump to ``chain``."""
        return [r for r in self.rules.get(hook, []) if option(r, "-j") == chain]


def option(argv: Sequence[str], flag: str) -> str | None:
    """The value after ``flag`` in a rule's argv, or None."""
    try:
        return argv[list(argv).index(flag) + 1]
    except (ValueError, IndexError):
        return None


def quote(arg: str) -> str:
    """One argument for iptables-restore input (it understands double quotes and ``\\``)."""
    if arg and not re.search(r'[\s"\\\']', arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rule_line(op: str, chain: str, argv: Sequence[str]) -> str:
    """A restore line such as ``-A CHAIN <argv>``, quoted."""
    return " ".join([op, chain, *(quote(a) for a in argv)])


def families() -> list[int]:
    """The address families whose save/restore tools are installed."""
    return [f for f in (4, 6) if all(shutil.which(t) for t in TOOLS[f])]


def _tool(family: int, index: int) -> str:
    exe = shutil.which(TOOLS[family][index])
    if exe is None:
        raise KernelError(f"{TOOLS[family][index]} not found (install iptables)")
    return exe


def run(argv: Sequence[str], stdin: str | None = None, *,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the iptables tool ``argv`` in this thread's netns, ``stdin`` as its input.

    With ``check`` (the default) a non-zero exit is a KernelError naming the command with its
    message (and the batch, for a restore); without it the caller reads the exit status, as
    ``iptables -C`` answers "is this rule there" with it. Not starting at all (missing, timed
    out) is always a KernelError.
    """
    try:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                              timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelError(f"running {argv[0]} failed: {exc}") from exc
    if check and proc.returncode != 0:
        detail = proc.stderr.strip() or proc.stdout.strip()
        if stdin is not None:
            detail = f"{detail}; batch was:\n{stdin}"
        raise KernelError(f"{' '.join(argv)} failed (exit {proc.returncode})", detail)
    return proc


#: Where iptables-legacy lists the tables a netns has, per family.
_LEGACY_TABLES = {4: "/proc/net/ip_tables_names", 6: "/proc/net/ip6_tables_names"}


def nat_chains(family: int) -> set[str] | None:
    """The nat table's chain names, when they can be had without running iptables-save.

    iptables-nft keeps the table as nftables table ``ip nat`` (``ip6 nat``), which
    libnftables lists in a fraction of a process start; iptables-legacy shows the tables a
    netns has in /proc (only "the table is missing" can be read there). None when unknown:
    the caller must then read the table with :func:`save_nat`.
    """
    from . import _nft

    exe = shutil.which(TOOLS[family][0])
    flavour = Path(exe).resolve().name if exe else ""
    if flavour == "xtables-nft-multi":
        try:
            listing = _nft.nft_json([{"list": {"chains": None}}], what="listing nftables chains",
                                    use_library=True)
        except KernelError:
            return None  # no libnftables, or it failed: ask iptables-save
        nft_family = "ip" if family == 4 else "ip6"
        return {item["chain"]["name"] for item in listing
                if "chain" in item and item["chain"].get("family") == nft_family
                and item["chain"].get("table") == "nat"}
    if flavour == "xtables-legacy-multi":
        try:
            present = "nat" in Path(_LEGACY_TABLES[family]).read_text().split()
        except FileNotFoundError:
            present = False  # no legacy table at all in this kernel yet
        except OSError:
            return None
        return None if present else set()
    return None


def save_nat(family: int) -> NatTable:
    """The nat table of ``family`` (4 or 6) in this thread's netns; empty if it has none.

    A missing table is told without running iptables-save (see :func:`nat_chains`).
    """
    if nat_chains(family) == set():
        return NatTable()
    return NatTable.parse(run([_tool(family, 0), "-t", "nat"]).stdout)


def restore_nat(family: int, lines: Sequence[str]) -> None:
    """Apply ``lines`` to the nat table as one ``--noflush`` batch; KernelError if refused."""
    batch = "\n".join(["*nat", *lines, "COMMIT", ""])
    # -w: wait for the xtables lock (iptables-legacy); iptables-nft accepts and ignores it.
    run([_tool(family, 1), "-w", "--noflush"], batch)


class _Transaction(FrozenRecord):
    """One caller's :func:`transact_nat`."""

    __slots__ = ("attempts", "family", "new_chain", "plan", "what")
    family: int
    plan: Callable[[NatTable], list[str]]
    what: str
    attempts: int
    new_chain: str | None

    def __init__(self, family: int, plan: Callable[[NatTable], list[str]], what: str,
                 attempts: int, new_chain: str | None) -> None:
        set_fields(self, family, plan, what, attempts, new_chain)


def _transact_alone(t: _Transaction) -> None:
    error: KernelError | None = None
    for attempt in range(t.attempts):
        empty = attempt == 0 and t.new_chain is not None and (
            (known := nat_chains(t.family)) is not None and t.new_chain not in known)
        lines = t.plan(NatTable() if empty else save_nat(t.family))
        if not lines:
            return
        try:
            restore_nat(t.family, lines)
        except KernelError as exc:
            error = exc
        else:
            return
    raise KernelError(f"failed to {t.what} (IPv{t.family})", str(error))


def _transact_batch(batch: Sequence[_Transaction]) -> list[BaseException | None]:
    """One read, every plan against the table as the plans before it leave it, one restore."""
    table = save_nat(batch[0].family)
    lines: list[str] = []
    errors: list[BaseException | None] = []
    for t in batch:
        try:
            mine = t.plan(table)
        except Exception as exc:  # that caller's own error, the others go on
            errors.append(exc)
            continue
        try:
            table.apply(mine)
        except ValueError as exc:
            raise KernelError(f"cannot merge the batch to {t.what}", str(exc)) from exc
        lines += mine
        errors.append(None)
    if lines:
        restore_nat(batch[0].family, lines)
    return errors


_COMBINER: Combiner[_Transaction, None] = Combiner(_transact_alone, _transact_batch)


def transact_nat(family: int, plan: Callable[[NatTable], list[str]], what: str, *,
                 attempts: int = 2, new_chain: str | None = None) -> None:
    """Read the nat table, apply the batch ``plan`` makes of it; read again if it fails.

    Between the read and the restore another plugin may have removed a rule the batch
    deletes or created a chain it creates with ``-N``, which fails the whole batch; a fresh
    read fixes that. KernelError naming ``what`` after ``attempts`` failures.

    ``plan`` must not change the table it is given (its lines are applied to it). Calls
    from other threads in the same namespace that arrive while one runs are merged into one
    restore (see :mod:`pycni.host._burst`); if that batch is refused, each call is redone alone.

    ``new_chain`` names the chain the plan is about, for a plan that reads nothing but that
    chain and the rules jumping to it: when :func:`nat_chains` shows it absent, the first
    attempt plans against an empty table without running iptables-save (iptables refuses
    jumps to a missing chain, so there is nothing of it to read).
    """
    _COMBINER.run((netns_key(), family),
                  _Transaction(family, plan, what, attempts, new_chain))


def nat_counters() -> BurstCounters:
    """How the nat transactions of this process were merged (see :class:`BurstCounters`)."""
    return _COMBINER.counters()


__all__ = ["COMMENT_MAX", "TOOLS", "NatTable", "families", "nat_chains", "nat_counters",
           "option", "quote", "restore_nat", "rule_line", "run", "save_nat", "split_rule",
           "stored_comment", "transact_nat"]
