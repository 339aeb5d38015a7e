"""Finding network configurations in a directory (``/etc/cni/net.d``), as runtimes do.

* Files ending ``.conflist`` are lists; ``.conf`` and ``.json`` are single-plugin configs
  that get upconverted (a ``.conf``/``.json`` that holds a ``plugins`` list and no ``type``
  is read as a list: podman and hand-written configs do this).
* Files are taken in lexical order of their names; the first valid one is the *default
  network* (the kubelet, containerd and CRI-O rule).
* A file that cannot be read or parsed is skipped and the reason logged, so one broken file
  does not take the node's networking down.
* A conflist gets extra plugins from ``<dir>/<name>/*.conf`` (lexical order) unless it sets
  ``loadOnlyInlinedPlugins`` (libcni 1.2).

Looking a network up by name follows libcni's ``LoadConfList``: conflists first, then
single configs, each in lexical order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from ..spec import CNIError, InvalidNetworkConfig, NetworkConfigList, decode_json_object

log = logging.getLogger("pycni.runtime")

DEFAULT_CONF_DIR = "/etc/cni/net.d"
LIST_EXTENSIONS = (".conflist",)
SINGLE_EXTENSIONS = (".conf", ".json")
#: A config file is small; refuse to slurp something that is clearly not one.
MAX_CONFIG_BYTES = 4 << 20


class NetworkNotFound(InvalidNetworkConfig):
    """No valid network configuration with the requested name (or none at all)."""


@dataclass(frozen=True)
class LoadedNetwork:
    """A valid network configuration and the file it came from."""

    path: str
    network: NetworkConfigList


@dataclass(frozen=True)
class SkippedFile:
    """A candidate file that was not used, and why."""

    path: str
    reason: str


@dataclass
class Discovery:
    """What a configuration directory holds, in lexical file order."""

    directory: str
    networks: list[LoadedNetwork] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def default(self) -> LoadedNetwork | None:
        """The default network: the lexically first valid file."""
        return self.networks[0] if self.networks else None

    def find(self, name: str) -> LoadedNetwork:
        """The network called ``name``: conflists first, then single configs (libcni)."""
        ordered = sorted(self.networks, key=lambda n: not n.path.endswith(LIST_EXTENSIONS))
        for loaded in ordered:
            if loaded.network.name == name:
                return loaded
        hint = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in self.skipped)
        raise NetworkNotFound(f'no net configuration with name "{name}" in {self.directory}',
                              f"skipped files: {hint}" if hint else "")


def _read(path: str | Path) -> bytes:
    with Path(path).open("rb") as fh:
        data = fh.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise InvalidNetworkConfig(f"file is larger than {MAX_CONFIG_BYTES} bytes")
    return data


def inlined_plugins(directory: str, name: str) -> list[dict[str, Any]]:
    """Plugin objects from ``<directory>/<name>/*.conf``, lexical order; errors propagate."""
    sub = Path(directory, name)
    try:
        entries = sorted(sub.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    plugins = []
    for path in entries:
        if path.suffix != ".conf" or not path.is_file():
            continue
        try:
            plugins.append(decode_json_object(_read(path), f"plugin config {path}"))
        except OSError as exc:
            raise InvalidNetworkConfig(f"cannot read plugin config {path}: {exc.strerror}"
                                       ) from exc
    return plugins


def load_file(path: str) -> NetworkConfigList:
    """Parse one configuration file into a list (upconverting single configs)."""
    try:
        data = _read(path)
    except OSError as exc:
        raise InvalidNetworkConfig(f"cannot read {path}: {exc.strerror}") from exc
    directory = str(Path(path).parent)
    if path.endswith(LIST_EXTENSIONS):
        raw = decode_json_object(data, f"network configuration list {path}")
        name = raw.get("name")
        extra = inlined_plugins(directory, name) if _plain_name(name) else []
        return NetworkConfigList.parse(data, extra_plugins=extra)
    raw = decode_json_object(data, f"network configuration {path}")
    if "type" not in raw and isinstance(raw.get("plugins"), list):
        return NetworkConfigList.parse(data)
    return NetworkConfigList.from_conf(raw)


def _plain_name(name: Any) -> TypeGuard[str]:
    # Only a name that is a single path component may select a subdirectory.
    return isinstance(name, str) and bool(name) and "/" not in name and name not in (".", "..")


def discover(directory: str = DEFAULT_CONF_DIR) -> Discovery:
    """Load every configuration in ``directory``; a missing directory holds none."""
    found = Discovery(directory)
    try:
        entries = sorted(Path(directory).iterdir())
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise InvalidNetworkConfig(f"cannot list {directory}: {exc.strerror}") from exc
    for entry in entries:
        path = str(entry)
        if entry.suffix not in LIST_EXTENSIONS + SINGLE_EXTENSIONS or not entry.is_file():
            continue
        try:
            network = load_file(path)
        except CNIError as exc:
            log.warning("skipping network config %s: %s", path, exc)
            found.skipped.append(SkippedFile(path, str(exc)))
            continue
        found.networks.append(LoadedNetwork(path, network))
    return found


def load_network(directory: str, name: str) -> NetworkConfigList:
    """The network called ``name`` in ``directory``; NetworkNotFound if there is none."""
    return discover(directory).find(name).network


def default_network(directory: str = DEFAULT_CONF_DIR) -> NetworkConfigList | None:
    """The default network of ``directory`` (lexically first valid file), or None."""
    loaded = discover(directory).default
    return loaded.network if loaded else None
