"""What a plugin is called with: the CNI_* environment, validated, plus the parsed config."""

from __future__ import annotations

from .._record import FrozenRecord, set_fields
from ..spec import (
    NAME_RULE,
    InvalidEnvironmentVariables,
    NetworkConfig,
    UnsupportedField,
    ifname_problem,
    is_valid_name,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

#: Which CNI_* variables each command requires. ADD, CHECK and DEL follow libcni's skel
#: (which also insists on CNI_PATH, where the spec calls it optional); GC needs CNI_PATH as
#: the spec says; STATUS takes CNI_PATH as optional, as the spec says (libcni's skel
#: requires it).
REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
    "VERSION": (),
}


def validate_container_id(cid: str) -> None:
    """Container IDs are ASCII alphanumeric plus ``_.-``, starting alphanumeric (spec §2)."""
    if not cid:
        raise InvalidEnvironmentVariables("CNI_CONTAINERID is empty")
    if not is_valid_name(cid):
        raise InvalidEnvironmentVariables(
            "invalid characters in CNI_CONTAINERID",
            f"{cid!r}: a container ID is {NAME_RULE}",
        )


def validate_ifname(name: str) -> None:
    """CNI_IFNAME must be an interface name (:func:`pycni.spec.ifname_problem`): code 4."""
    problem = ifname_problem(name)
    if problem == "empty":
        raise InvalidEnvironmentVariables("CNI_IFNAME is empty")
    if problem is not None:
        raise InvalidEnvironmentVariables(
            f"CNI_IFNAME {name!r} is not a valid interface name", problem)


def parse_cni_args(value: str) -> list[tuple[str, str]]:
    """``"K1=V1;K2=V2"`` -> pairs, in order; an empty string gives none."""
    pairs: list[tuple[str, str]] = []
    if not value:
        return pairs
    for item in value.split(";"):
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep or not key or "=" in val:
            raise InvalidEnvironmentVariables(
                "invalid CNI_ARGS", f"pair {item!r} is not KEY=VALUE (pairs are separated by ';')"
            )
        pairs.append((key, val))
    return pairs


def _truthy(key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true"):
        return True
    if lowered in ("0", "false", ""):
        return False
    raise InvalidEnvironmentVariables(f"invalid CNI_ARGS {key}={value!r}: expected true or false")


class CmdArgs(FrozenRecord):
    """One plugin invocation: the CNI_* variables, the stdin bytes and the parsed config.

    For STATUS and GC the container fields are empty strings.
    """

    __slots__ = ("args", "command", "conf", "container_id", "ifname", "netns", "path", "stdin")
    command: str
    container_id: str
    netns: str
    ifname: str
    args: str
    path: tuple[str, ...]
    stdin: bytes
    conf: NetworkConfig

    def __init__(self, command: str, container_id: str, netns: str, ifname: str, args: str,  # noqa: PLR0917
                 path: tuple[str, ...], stdin: bytes, conf: NetworkConfig) -> None:
        set_fields(self, command, container_id, netns, ifname, args, path, stdin, conf)

    def args_pairs(self) -> list[tuple[str, str]]:
        """CNI_ARGS as (key, value) pairs, validated."""
        return parse_cni_args(self.args)

    def cni_args(self, known: Iterable[str]) -> dict[str, str]:
        """CNI_ARGS restricted to ``known`` keys.

        An unknown key is an error unless ``IgnoreUnknown`` is true, as in libcni; runtimes
        (kubelet, containerd, CRI-O, podman) always set it because they add K8S_POD_* keys.
        """
        pairs = self.args_pairs()
        known_set = set(known)
        ignore = any(k == "IgnoreUnknown" and _truthy(k, v) for k, v in pairs)
        out: dict[str, str] = {}
        for key, value in pairs:
            if key in known_set:
                out[key] = value
            elif key != "IgnoreUnknown" and not ignore:
                raise UnsupportedField(
                    f"unknown CNI_ARGS key {key!r}",
                    f"this plugin knows {sorted(known_set)}; set IgnoreUnknown=1 to skip others",
                )
        return out

    def env(self, command: str | None = None) -> dict[str, str]:
        """The CNI_* environment for delegating this call (e.g. to an IPAM plugin)."""
        env = {
            "CNI_COMMAND": command or self.command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": self.netns,
            "CNI_IFNAME": self.ifname,
            "CNI_ARGS": self.args,
            "CNI_PATH": ":".join(self.path),
        }
        return {k: v for k, v in env.items() if v}


def env_for(command: str, environ: Mapping[str, str]) -> dict[str, str]:
    """Check that ``command`` is known and its required variables are set and non-empty.

    Returns the CNI_* subset of ``environ``. A missing variable is an
    InvalidEnvironmentVariables whose message lists all of them, as libcni's does:
    ``required env variables [CNI_NETNS,CNI_IFNAME] missing``.
    """
    if not command:
        raise InvalidEnvironmentVariables("required env variables [CNI_COMMAND] missing")
    if command not in COMMANDS:
        raise InvalidEnvironmentVariables(
            f"unknown CNI_COMMAND: {command}", f"expected one of {', '.join(COMMANDS)}"
        )
    missing = [name for name in REQUIRED_ENV[command] if not environ.get(name)]
    if missing:
        raise InvalidEnvironmentVariables(
            f"required env variables [{','.join(missing)}] missing",
            f"CNI_COMMAND={command} needs {', '.join(REQUIRED_ENV[command])}",
        )
    return {k: v for k, v in environ.items() if k.startswith("CNI_")}
