"""``pycni multus gen-config``: write the meta plugin's config from the node's network.

As Multus's ``--multus-conf-file=auto``: the first configuration in the directory (lexical
order, the runtime's default network; a ``multus`` one is skipped) becomes the only
delegate, its capabilities are declared by the meta plugin (so the runtime keeps passing
``portMappings`` and the like), and the result goes to ``00-multus.conf`` beside it, which
sorts first and so becomes the runtime's default network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..runtime import discover
from ..spec import InvalidNetworkConfig, decode_json_object
from ..store import atomic_write
from ._config import DEFAULT_CNI_DIR, LOG_LEVELS

DEFAULT_OUTPUT = "00-multus.conf"


def gen_config(conf_dir: str, *, kubeconfig: str = "", cni_version: str = "",
               namespace_isolation: bool = False, global_namespaces: str = "",
               readiness_indicator_file: str = "", log_level: str = "", log_file: str = "",
               bin_dir: str = "", cni_dir: str = DEFAULT_CNI_DIR,
               master_file: str = "") -> dict[str, Any]:
    """The meta plugin's configuration for the network in ``conf_dir`` (see the module
    docstring); ``master_file`` picks the delegate's file by name instead."""
    found = discover(conf_dir)
    candidates = [n for n in found.networks if "multus" not in n.network.types]
    if master_file:
        candidates = [n for n in candidates if Path(n.path).name == master_file]
    if not candidates:
        what = f"file {master_file!r}" if master_file else "network configuration"
        raise InvalidNetworkConfig(f"no {what} in {conf_dir} to delegate to",
                                   "; ".join(f"{s.path}: {s.reason}" for s in found.skipped))
    chosen = candidates[0]
    delegate = decode_json_object(Path(chosen.path).read_bytes(), chosen.path)
    if log_level and log_level not in LOG_LEVELS:
        raise InvalidNetworkConfig(f'invalid "logLevel": expected one of '
                                   f"{', '.join(LOG_LEVELS)}, got {log_level!r}")
    capabilities = dict.fromkeys(chosen.network.capabilities(), True)
    conf: dict[str, Any] = {
        "cniVersion": cni_version or chosen.network.cni_version,
        "name": "multus-cni-network",
        "type": "multus",
    }
    if capabilities:
        conf["capabilities"] = capabilities
    optional = {"kubeconfig": kubeconfig, "globalNamespaces": global_namespaces,
                "readinessindicatorfile": readiness_indicator_file, "logLevel": log_level,
                "logFile": log_file, "binDir": bin_dir}
    conf.update({k: v for k, v in optional.items() if v})
    if namespace_isolation:
        conf["namespaceIsolation"] = True
    conf["cniDir"] = cni_dir
    conf["delegates"] = [delegate]
    return conf


def write_config(conf_dir: str, conf: dict[str, Any], output: str = DEFAULT_OUTPUT) -> Path:
    """Write ``conf`` atomically as ``<conf_dir>/<output>``; returns the path."""
    path = Path(conf_dir, output)
    try:
        atomic_write(path, (json.dumps(conf, indent=2) + "\n").encode(), mode=0o644)
    except OSError as exc:
        raise InvalidNetworkConfig(f"cannot write {path}: {exc.strerror}") from exc
    return path
