"""The ``pycni`` command: a thin front end over :mod:`pycni.runtime` and :mod:`pycni.host`.

``pycni add|check|del NETWORK NETNS`` behave like cnitool: the network is looked up in
``NETCONFPATH`` (default ``/etc/cni/net.d``), plugins in ``CNI_PATH``, CNI_ARGS and CAP_ARGS
(JSON) come from the environment, the interface is ``CNI_IFNAME`` (default ``eth0``) and the
container ID is ``cnitool-`` plus a hash of the netns path, so pycni and cnitool address the
same attachment. Errors are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import subprocess
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from ..spec import (
    CURRENT_VERSION,
    SUPPORTED_VERSIONS,
    CNIError,
    GCAttachment,
    InvalidEnvironmentVariables,
    NetworkConfigList,
    decode_json,
)

log = logging.getLogger("pycni.cli")

app = typer.Typer(
    name="pycni",
    help="A CNI runtime and plugin suite: attach network namespaces to CNI networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
netns_app = typer.Typer(help="Manage named network namespaces (/run/netns).",
                        no_args_is_help=True)
app.add_typer(netns_app, name="netns")

# -- shared options ------------------------------------------------------------------------

ConfDir = Annotated[str, typer.Option("--conf-dir", envvar="NETCONFPATH",
                                      help="Network configuration directory.")]
CniPath = Annotated[str, typer.Option("--cni-path", envvar="CNI_PATH",
                                      help="Plugin search path (':'-separated).")]
CacheDir = Annotated[str, typer.Option("--cache-dir", envvar="PYCNI_CACHE_DIR",
                                       help="Result cache directory (libcni's CacheDir).")]
IfName = Annotated[str, typer.Option("-i", "--ifname", envvar="CNI_IFNAME",
                                     help="Interface name inside the namespace.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
DataDir = Annotated[str | None, typer.Option(
    "--data-dir", help="host-local dataDir of the built-in network.")]
Bridge = Annotated[str | None, typer.Option("--bridge", help="Bridge of the built-in network.")]
Subnet = Annotated[str | None, typer.Option("--subnet", help="Subnet of the built-in network.")]
NetName = Annotated[str | None, typer.Option("--net", help="Network name (default: the "
                                           "directory's default, else pycni's own).")]

DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CNI_PATH = "/opt/cni/bin"
DEFAULT_CACHE_DIR = "/var/lib/cni"


def _fail(exc: Exception, as_json: bool = False) -> NoReturn:
    """One line on stderr (and the CNI error object on stdout with --json); exit 1."""
    if isinstance(exc, CNIError):
        if as_json:
            typer.echo(json.dumps(exc.to_json(CURRENT_VERSION)))
        typer.echo(f"pycni: {exc}", err=True)
    else:
        typer.echo(f"pycni: {exc}", err=True)
    raise typer.Exit(1)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("-v", "--verbose",
                                                help="Log what the runtime does.")] = False
          ) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="pycni: %(levelname)s: %(message)s")


def _split_path(value: str) -> list[str]:
    return [p for p in value.split(os.pathsep) if p]


def _cni_args() -> list[tuple[str, str]]:
    from ..skel import parse_cni_args

    return parse_cni_args(os.environ.get("CNI_ARGS", ""))


def _cap_args() -> dict[str, Any]:
    raw = os.environ.get("CAP_ARGS", "")
    if not raw:
        return {}
    value = decode_json(raw, "CAP_ARGS")
    if not isinstance(value, dict):
        raise InvalidEnvironmentVariables("CAP_ARGS must be a JSON object")
    return value


def _netns_path(netns: str) -> str:
    """A path as given (made absolute, as cnitool does), or a name under /run/netns."""
    from ..host import netns_path

    if "/" not in netns and Path(netns_path(netns)).exists():
        return netns_path(netns)
    return str(Path(netns).absolute())


def _container_id(netns_path: str) -> str:
    # cnitool's rule: the ID is derived from the netns path, so add and del agree on it.
    return "cnitool-" + hashlib.sha512(netns_path.encode()).hexdigest()[:20]


def _load(conf_dir: str, name: str, cni: Any) -> NetworkConfigList:
    from ..runtime import DEFAULT_NETWORK_NAME, NetworkNotFound, builtin_network, load_network

    try:
        net = load_network(conf_dir, name)
    except NetworkNotFound:
        if name != DEFAULT_NETWORK_NAME:
            raise
        net = builtin_network()
    negotiated: NetworkConfigList = cni.negotiate(net)
    return negotiated


def _attachment(command: str, network: str, netns: str, *, ifname: str, conf_dir: str,
                cni_path: str, cache_dir: str, as_json: bool) -> None:
    from ..runtime import CNIConfig, RuntimeConf

    try:
        cni = CNIConfig(_split_path(cni_path), cache_dir)
        net = _load(conf_dir, network, cni)
        path = _netns_path(netns)
        rt = RuntimeConf(_container_id(path), path, ifname, _cni_args(), _cap_args())
        if command == "add":
            result = cni.add_network_list(net, rt)
            typer.echo(json.dumps(result.to_json(net.cni_version), indent=4))
        elif command == "check":
            cni.check_network_list(net, rt)
            if as_json:
                typer.echo(json.dumps({"network": net.name, "containerID": rt.container_id,
                                       "ifname": ifname, "ok": True}))
        else:
            cni.delete_network_list(net, rt)
    except CNIError as exc:
        _fail(exc, as_json)


# -- cnitool-compatible commands -----------------------------------------------------------

def _register_attachment_command(command: str, doc: str) -> None:
    def cmd(network: str, netns: str, *, ifname: IfName = "eth0",
            conf_dir: ConfDir = DEFAULT_CONF_DIR, cni_path: CniPath = DEFAULT_CNI_PATH,
            cache_dir: CacheDir = DEFAULT_CACHE_DIR, as_json: JsonOut = False) -> None:
        _attachment(command, network, netns, ifname=ifname, conf_dir=conf_dir,
                    cni_path=cni_path, cache_dir=cache_dir, as_json=as_json)

    cmd.__doc__ = doc
    cmd.__name__ = f"{command}_cmd"
    app.command(command)(cmd)


for _command, _doc in (("add", "Attach NETNS to NETWORK (prints the result JSON)."),
                       ("check", "Check NETNS's attachment to NETWORK."),
                       ("del", "Detach NETNS from NETWORK.")):
    _register_attachment_command(_command, _doc)


@app.command("status")
def status_cmd(network: str, *, conf_dir: ConfDir = DEFAULT_CONF_DIR,
               cni_path: CniPath = DEFAULT_CNI_PATH, cache_dir: CacheDir = DEFAULT_CACHE_DIR,
               as_json: JsonOut = False) -> None:
    """Ask NETWORK's plugins whether they can take ADDs (spec 1.1 STATUS)."""
    from ..runtime import CNIConfig

    try:
        cni = CNIConfig(_split_path(cni_path), cache_dir)
        net = _load(conf_dir, network, cni)
        cni.status_network_list(net)
    except CNIError as exc:
        _fail(exc, as_json)
    if as_json:
        typer.echo(json.dumps({"network": net.name, "cniVersion": net.cni_version,
                               "available": True}))
    else:
        typer.echo(f"network {net.name} is available")


@app.command("gc")
def gc_cmd(network: str, *,
           valid: Annotated[list[str] | None, typer.Option(
               "--valid", metavar="CONTAINERID:IFNAME",
               help="An attachment to keep (repeatable); without any, none is kept.")] = None,
           conf_dir: ConfDir = DEFAULT_CONF_DIR, cni_path: CniPath = DEFAULT_CNI_PATH,
           cache_dir: CacheDir = DEFAULT_CACHE_DIR, as_json: JsonOut = False) -> None:
    """Delete NETWORK's cached attachments not kept, then GC its plugins (spec 1.1)."""
    from ..runtime import CNIConfig

    keep = []
    for item in valid or []:
        cid, sep, ifname = item.rpartition(":")
        if not sep or not cid or not ifname:
            _fail(InvalidEnvironmentVariables(f"--valid {item!r}: expected CONTAINERID:IFNAME"),
                  as_json)
        keep.append(GCAttachment(cid, ifname))
    try:
        cni = CNIConfig(_split_path(cni_path), cache_dir)
        net = _load(conf_dir, network, cni)
        cni.gc_network_list(net, keep)
    except CNIError as exc:
        _fail(exc, as_json)


@app.command("list")
def list_cmd(conf_dir: ConfDir = DEFAULT_CONF_DIR, as_json: JsonOut = False) -> None:
    """Show the networks in the configuration directory (the first is the default)."""
    from ..runtime import discover

    try:
        found = discover(conf_dir)
    except CNIError as exc:
        _fail(exc, as_json)
    if as_json:
        typer.echo(json.dumps({
            "networks": [{"name": n.network.name, "file": n.path,
                          "cniVersion": n.network.cni_version, "plugins": n.network.types}
                         for n in found.networks],
            "skipped": [{"file": s.path, "reason": s.reason} for s in found.skipped]}))
        return
    for i, n in enumerate(found.networks):
        mark = " (default)" if i == 0 else ""
        typer.echo(f"{n.network.name}{mark}\t{n.network.cni_version}\t"
                   f"{','.join(n.network.types)}\t{n.path}")
    for s in found.skipped:
        typer.echo(f"skipped {s.path}: {s.reason}", err=True)


# -- namespaces ----------------------------------------------------------------------------

@netns_app.command("add")
def netns_add(name: str) -> None:
    """Create a named network namespace."""
    from ..host import create_netns

    try:
        typer.echo(create_netns(name))
    except CNIError as exc:
        _fail(exc)


@netns_app.command("del")
def netns_del(name: str) -> None:
    """Remove a named network namespace (a missing one is fine)."""
    from ..host import remove_netns

    try:
        remove_netns(name)
    except CNIError as exc:
        _fail(exc)


@netns_app.command("list")
def netns_list() -> None:
    """List named network namespaces."""
    from ..host import list_netns

    for name in list_netns():
        typer.echo(name)


# -- dhcp daemon ---------------------------------------------------------------------------

dhcp_app = typer.Typer(help="The DHCP daemon that holds leases for the dhcp IPAM plugin.",
                       no_args_is_help=True)
app.add_typer(dhcp_app, name="dhcp")


@dhcp_app.command("daemon")
def dhcp_daemon_cmd(
    *,
    socket_path: Annotated[str, typer.Option(
        "--socket-path", help="Unix socket the plugin talks to.")] = "/run/cni/dhcp.sock",
    state_dir: Annotated[str, typer.Option(
        "--state-dir", help="Where leases are stored across restarts.")] = "/var/lib/cni/dhcp",
    pidfile: Annotated[str, typer.Option("--pidfile", help="Write the PID here.")] = "",
    host_prefix: Annotated[str, typer.Option(
        "--hostprefix", help="Prefix of the host's root (netns and socket paths).")] = "",
    broadcast: Annotated[bool, typer.Option(
        "--broadcast", help="Ask servers to broadcast their replies.")] = False,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0.1, help="Seconds to wait for each reply.")] = 10.0,
    resend_max: Annotated[float, typer.Option(
        "--resend-max", min=0.1, help="Longest pause between attempts (s).")] = 62.0,
    resend_timeout: Annotated[float, typer.Option(
        "--resend-timeout", min=0.1, help="Give up acquiring a lease after (s).")] = 208.0,
    max_lease_time: Annotated[float | None, typer.Option(
        "--max-lease-time", min=1.0, help="Trust leases for at most this long (s).")] = None,
) -> None:
    """Run the DHCP daemon in the foreground until SIGTERM/SIGINT."""
    from ..daemon.dhcp import DaemonOptions, run_daemon
    from ..ipam.dhcp import Timing

    timing = Timing(timeout=timeout, resend_max=resend_max, resend_timeout=resend_timeout,
                    broadcast=broadcast, max_lease_time=max_lease_time)
    try:
        run_daemon(DaemonOptions(socket_path=socket_path, state_dir=state_dir, timing=timing,
                                 host_prefix=host_prefix, pidfile=pidfile))
    except CNIError as exc:
        _fail(exc)


# -- multus ----------------------------------------------------------------------------------

multus_app = typer.Typer(help="The Multus-compatible meta plugin (multi-network pods).",
                         no_args_is_help=True)
app.add_typer(multus_app, name="multus")


@multus_app.command("gen-config")
def multus_gen_config_cmd(
    *,
    conf_dir: ConfDir = DEFAULT_CONF_DIR,
    kubeconfig: Annotated[str, typer.Option(
        "--kubeconfig", help="Kubeconfig the plugin reads pods and NADs with.")] = "",
    cni_version: Annotated[str, typer.Option(
        "--cni-version", help="cniVersion of the generated config (default: the "
        "delegate's).")] = "",
    namespace_isolation: Annotated[bool, typer.Option(
        "--namespace-isolation", help="Pods may use only NADs of their own namespace "
        "(and the global ones).")] = False,
    global_namespaces: Annotated[str, typer.Option(
        "--global-namespaces", help="Comma-separated namespaces whose NADs any pod may "
        "use.")] = "",
    readiness_indicator_file: Annotated[str, typer.Option(
        "--readiness-indicator-file", help="ADD waits until this file exists.")] = "",
    log_level: Annotated[str, typer.Option(
        "--log-level", help="debug, verbose, error or panic.")] = "",
    log_file: Annotated[str, typer.Option("--log-file", help="Log here.")] = "",
    bin_dir: Annotated[str, typer.Option(
        "--bin-dir", help="Where the delegates' plugins are (default: CNI_PATH).")] = "",
    master_file: Annotated[str, typer.Option(
        "--master-cni-file", help="Delegate to this file instead of the first one.")] = "",
    output: Annotated[str, typer.Option(
        "--output", help="File name written in the config directory.")] = "00-multus.conf",
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the config instead of writing it.")] = False,
) -> None:
    """Write the meta plugin's config from the first network in the config directory (as
    Multus's --multus-conf-file=auto)."""
    from ..multi import gen_config, write_config

    try:
        conf = gen_config(conf_dir, kubeconfig=kubeconfig, cni_version=cni_version,
                          namespace_isolation=namespace_isolation,
                          global_namespaces=global_namespaces,
                          readiness_indicator_file=readiness_indicator_file,
                          log_level=log_level, log_file=log_file, bin_dir=bin_dir,
                          master_file=master_file)
        if dry_run:
            typer.echo(json.dumps(conf, indent=2))
            return
        typer.echo(write_config(conf_dir, conf, output))
    except CNIError as exc:
        _fail(exc)


@app.command("migrate")
def migrate_cmd(
    *,
    to: Annotated[str, typer.Option("--to", help="The new default network: a NAD "
                                    "(namespace/name) or a network in confDir.")],
    pod: Annotated[str, typer.Option("--pod", help="One pod: namespace/name.")] = "",
    namespace: Annotated[str, typer.Option("--namespace", help="Every pod of a "
                                           "namespace on this node.")] = "",
    node: Annotated[str, typer.Option("--node", help="Every pod on this node (NODE), and "
                                      "the default for new pods.")] = "",
    kubeconfig: Annotated[str, typer.Option("--kubeconfig", help="Instead of the multus "
                                            "config's.")] = "",
    multus_config: Annotated[str, typer.Option(
        "--multus-config", help="The meta plugin's config.")] = "/etc/cni/net.d/00-multus.conf",
    renumber: Annotated[bool, typer.Option(
        "--renumber", help="Degraded: take a new address from the new network (the pod's "
        "IP changes; Services keep the old one until the pod is recreated).")] = False,
    cache_dir: Annotated[str, typer.Option(
        "--cache-dir", help="The runtime's libcni cache (its cached result of each pod is "
        "updated).")] = DEFAULT_CACHE_DIR,
    as_json: JsonOut = False,
) -> None:
    """Switch running pods' default network without restarting them, keeping their address."""
    from ..multi import migrate

    if sum(bool(x) for x in (pod, namespace, node)) != 1:
        _fail(ValueError("give exactly one of --pod, --namespace, --node"))
    try:
        reports = migrate(multus_config, to, pod=pod, namespace=namespace, node=node,
                          renumber=renumber, kubeconfig=kubeconfig, runtime_cache_dir=cache_dir)
    except CNIError as exc:
        _fail(exc, as_json)
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in reports], indent=2))
    else:
        for r in reports:
            line = f"{r.pod}: {r.from_network} -> {r.to_network}: {r.status}"
            typer.echo(line + (f" ({', '.join(r.addresses)})" if r.addresses else "")
                       + (f": {r.error}" if r.error else ""))
    if not reports:
        typer.echo("pycni: no recorded pod matches", err=True)
    if any(r.status == "failed" for r in reports):
        raise typer.Exit(1)


# -- run / demo ----------------------------------------------------------------------------

def _pods(conf_dir: str, cni_path: str, cache_dir: str, *, data_dir: str | None,
          bridge: str | None, subnet: str | None) -> Any:
    from ..runtime import (
        DEFAULT_BRIDGE,
        DEFAULT_DATA_DIR,
        DEFAULT_SUBNET,
        PodNetworks,
        builtin_network,
    )

    builtin = builtin_network(data_dir=data_dir or DEFAULT_DATA_DIR,
                              bridge=bridge or DEFAULT_BRIDGE, subnet=subnet or DEFAULT_SUBNET)
    return PodNetworks(conf_dir=conf_dir, path=_split_path(cni_path), cache_dir=cache_dir,
                       builtin=builtin)


def _run_in(netns: str, argv: list[str]) -> int:
    from ..host import run_in_netns

    # The child is forked from a thread that sits in the namespace, so it starts there: no
    # shell and no nsenter binary involved. We wait for it here, outside that thread.
    proc: subprocess.Popen[bytes] = run_in_netns(netns, subprocess.Popen, argv)
    try:
        status = proc.wait()
    except KeyboardInterrupt:
        status = proc.wait()
    return 128 - status if status < 0 else status


@app.command("run", context_settings={"allow_interspersed_args": False})
def run_cmd(
    command: Annotated[list[str], typer.Argument(help="The command and its arguments.")],
    *,
    net: NetName = None,
    netns_name: Annotated[str | None, typer.Option(
        "--netns-name", help="Name of the namespace to create (default: pycni-<random>).")
    ] = None,
    ifname: IfName = "eth0",
    conf_dir: ConfDir = DEFAULT_CONF_DIR,
    cni_path: CniPath = DEFAULT_CNI_PATH,
    cache_dir: CacheDir = DEFAULT_CACHE_DIR,
    data_dir: DataDir = None,
    bridge: Bridge = None,
    subnet: Subnet = None,
) -> None:
    """Run COMMAND in a fresh namespace attached to a network; tear it all down after."""
    from ..host import create_netns, remove_netns

    name = netns_name or f"pycni-{secrets.token_hex(4)}"
    pods = _pods(conf_dir, cni_path, cache_dir, data_dir=data_dir, bridge=bridge,
                 subnet=subnet)
    try:
        path = create_netns(name)
    except CNIError as exc:
        _fail(exc)
    status = 1
    try:
        setup = pods.setup(name, path, network=net, ifname=ifname)
        log.info("pod %s on %s: %s", name, setup.network, ", ".join(setup.ips))
        status = _run_in(path, command)
    except FileNotFoundError as exc:
        typer.echo(f"pycni: command not found: {command[0]}", err=True)
        log.debug("%s", exc)
        status = 127
    except CNIError as exc:
        typer.echo(f"pycni: {exc}", err=True)
    finally:
        try:
            pods.teardown(name, path, network=net, ifname=ifname)
        except CNIError as exc:
            typer.echo(f"pycni: teardown: {exc}", err=True)
            status = status or 1
        remove_netns(name)
    raise typer.Exit(status)


@app.command("demo")
def demo_cmd(
    *,
    net: NetName = None,
    count: Annotated[int, typer.Option("--count", min=1, help="Pings to send.")] = 3,
    conf_dir: ConfDir = DEFAULT_CONF_DIR,
    cni_path: CniPath = DEFAULT_CNI_PATH,
    cache_dir: CacheDir = DEFAULT_CACHE_DIR,
    data_dir: DataDir = None,
    bridge: Bridge = None,
    subnet: Subnet = None,
    prefix: Annotated[str, typer.Option("--prefix", help="Prefix of the two namespaces' "
                                        "names.")] = "pycni-demo",
) -> None:
    """Two pods on one network ping each other; then everything is torn down."""
    from ._demo import run_demo

    pods = _pods(conf_dir, cni_path, cache_dir, data_dir=data_dir, bridge=bridge,
                 subnet=subnet)
    try:
        status = run_demo(pods, network=net, count=count, prefix=prefix, echo=typer.echo)
    except CNIError as exc:
        _fail(exc)
    except FileNotFoundError:
        typer.echo("pycni: ping is not installed (iputils-ping)", err=True)
        status = 1
    raise typer.Exit(status)


# -- install / version ---------------------------------------------------------------------

def _is_ours(path: Path) -> bool:
    from ..invoke import is_pycni_executable

    return is_pycni_executable(path)


AgentSocket = Annotated[str, typer.Option(
    "--socket", envvar="PYCNI_AGENT_SOCKET", help="The agent's unix socket.")]


@app.command("install")
def install_cmd(
    bin_dir: Annotated[str, typer.Option("--bin-dir", help="Where to write the plugins.")]
    = DEFAULT_CNI_PATH,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace executables that pycni did not write.")] = False,
    agent: Annotated[bool, typer.Option(
        "--agent", help="Also write the systemd unit of the node agent (not started).")]
    = False,
    unit_dir: Annotated[str, typer.Option(
        "--unit-dir", help="Where --agent writes pycni-agent.service.")]
    = "/etc/systemd/system",
    socket_path: AgentSocket = "/run/pycni/agent.sock",
) -> None:
    """Write an executable for every pycni plugin type into BIN_DIR.

    Each forwards its calls to the node agent (``pycni agent``) listening on --socket, and
    runs the plugin itself when no agent is there.
    """
    from ..daemon import InstallError, install_plugins, install_unit

    try:
        skipped = install_plugins(bin_dir, socket_path=socket_path,
                                  replace=lambda dest: force or _is_ours(dest),
                                  written=lambda dest: typer.echo(str(dest)))
        if agent:
            typer.echo(str(install_unit(unit_dir, socket_path=socket_path)))
    except InstallError as exc:
        _fail(exc)
    if skipped:
        typer.echo(f"pycni: left {', '.join(skipped)} in {bin_dir} alone: not written by "
                   "pycni (use --force to replace)", err=True)


@app.command("agent")
def agent_cmd(
    *,
    socket_path: AgentSocket = "/run/pycni/agent.sock",
    metrics_address: Annotated[str, typer.Option(
        "--metrics-address", help="HOST:PORT of /healthz, /readyz and /metrics; "
        "'off' to disable.")] = "127.0.0.1:9655",
    workers: Annotated[int, typer.Option("--workers", min=1,
                                         help="Calls run at once.")] = 32,
    grace: Annotated[float, typer.Option(
        "--grace", min=0, help="Seconds to let running calls finish on SIGTERM.")] = 30.0,
    rollback: Annotated[float, typer.Option(
        "--rollback", min=0, help="Seconds after --grace for running ADDs to return and be "
        "undone before the agent exits.")] = 8.0,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning.")]
    = "info",
    cache_dir: CacheDir = DEFAULT_CACHE_DIR,
    cluster_config: Annotated[str | None, typer.Option(
        "--cluster-config", help="JSON cluster config: also bring this node into the "
        "cluster (subnets, backend, masquerade, the node's CNI config).")] = None,
    cluster_status: Annotated[str | None, typer.Option(
        "--cluster-status", help="Write the cluster controller's status (JSON) here.")] = None,
    node_name: Annotated[str | None, typer.Option(
        "--node-name", envvar="PYCNI_NODE_NAME",
        help="This node's name: overrides the cluster config's nodeName; with "
        "--multus-config, hot-plug follows the pods on this node.")] = None,
    kubeconfig: Annotated[str | None, typer.Option(
        "--kubeconfig", help="For hot-plug (default: the multus configuration's, else "
        "in-cluster credentials).")] = None,
    multus_config: Annotated[str, typer.Option(
        "--multus-config", help="The multus configuration (e.g. /etc/cni/net.d/00-multus.conf; "
        "its cniDir holds the pod records): with --node-name, enables hot-plug of the pods' "
        "networks annotation and the multus plugin's watch cache.")] = "",
    remove_config_on_exit: Annotated[bool, typer.Option(
        "--remove-config-on-exit", help="On SIGTERM, leave the cluster for good: remove the "
        "node's CNI config, masquerade and backend objects and give up the subnet.")] = False,
) -> None:
    """Run the node agent: serve the plugin executables' calls in one warm process."""
    from ..daemon import (
        AgentConfig,
        AgentError,
        ClusterRunner,
        configure_logging,
        parse_address,
        run_agent,
    )

    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        _fail(ValueError(f"unknown log level {log_level!r}"))
    try:
        address = None if metrics_address == "off" else parse_address(metrics_address)
    except ValueError as exc:
        _fail(exc)
    runner = None
    if cluster_config is not None:
        try:
            runner = ClusterRunner(_controller(cluster_config, cluster_status, node_name))
        except CNIError as exc:
            _fail(exc)
    configure_logging(level)
    config = AgentConfig(socket_path=socket_path, metrics_address=address, workers=workers,
                         grace=grace, rollback=rollback, cache_dir=cache_dir,
                         node_name=node_name or "", kubeconfig=kubeconfig,
                         multus_config=multus_config)
    try:
        status = run_agent(config, runner, release_on_exit=remove_config_on_exit)
    except AgentError as exc:
        _fail(exc)
    raise typer.Exit(status)


def _controller(path: str, status_file: str | None = None, node_name: str | None = None
                ) -> Any:
    from ..cluster import ClusterConfig, NodeController
    from ..cluster.backends import BACKENDS

    config = ClusterConfig.load(path, backends=BACKENDS, node_name=node_name)
    return NodeController(config, status_file=status_file)


cluster_app = typer.Typer(help="The node's membership in a pycni cluster.",
                          no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("check")
def cluster_check_cmd(
    cluster_config: Annotated[str, typer.Option("--cluster-config",
                                                help="The agent's cluster config.")],
) -> None:
    """Check a cluster config (and build its datastore and backend) without changing anything."""
    try:
        _controller(cluster_config)
    except CNIError as exc:
        _fail(exc)
    typer.echo("ok")


@cluster_app.command("uninstall")
def cluster_uninstall_cmd(
    cluster_config: Annotated[str, typer.Option("--cluster-config",
                                                help="The agent's cluster config.")],
) -> None:
    """Remove what the agent set up on this node: the CNI config (first), the masquerade
    table and the backend's objects. Stop the agent before."""
    try:
        _controller(cluster_config).release()
    except CNIError as exc:
        _fail(exc)


# -- lab ----------------------------------------------------------------------------------

lab_app = typer.Typer(help="A multi-node pycni cluster on this machine, in network "
                      "namespaces (nothing in the machine's own namespace).",
                      no_args_is_help=True)
app.add_typer(lab_app, name="lab")
LabDir = Annotated[str, typer.Option("--dir", envvar="PYCNI_LAB_DIR",
                                     help="Where the lab keeps its state.")]


@lab_app.command("up")
def lab_up_cmd(
    *,
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=200, help="Nodes.")] = 3,
    pods_per_node: Annotated[int, typer.Option("--pods-per-node", min=0, max=200,
                                               help="Pods per node.")] = 2,
    datastore: Annotated[str, typer.Option("--datastore",
                                           help="etcd or kubernetes.")] = "etcd",
    backend: Annotated[str, typer.Option("--backend", help="vxlan or host-gw.")] = "vxlan",
    prefix: Annotated[str, typer.Option("--prefix", help="Prefix of every namespace name.")]
    = "pycnilab",
    directory: LabDir = "/run/pycni-lab",
) -> None:
    """Start a datastore, N nodes each with its own agent, and K pods per node."""
    from ..testing import Lab, LabError, LabOptions

    options = LabOptions(nodes=nodes, pods_per_node=pods_per_node, datastore=datastore,
                         backend=backend, prefix=prefix, directory=directory)
    try:
        lab = Lab.up(options, echo=typer.echo)
    except (LabError, CNIError, OSError) as exc:
        _fail(exc)
    _print_lab(lab.summary(), None)


@lab_app.command("status")
def lab_status_cmd(
    *,
    as_json: JsonOut = False,
    ping: Annotated[bool, typer.Option("--ping/--no-ping",
                                       help="Ping every pod from every pod.")] = True,
    directory: LabDir = "/run/pycni-lab",
) -> None:
    """Show the lab's nodes, subnets, peers, pods and pod-to-pod reachability."""
    from ..testing import Lab

    lab = Lab(directory)
    if not lab.exists:
        _fail(ValueError(f"no lab in {directory} (start one with 'pycni lab up')"))
    summary = lab.summary()
    reach = lab.reachability() if ping else None
    if as_json:
        if reach is not None:
            summary["reachability"] = reach
        typer.echo(json.dumps(summary, indent=2))
        return
    _print_lab(summary, reach)


def _print_lab(summary: dict[str, Any], reach: dict[str, dict[str, bool]] | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    nodes = Table(title=f"nodes (datastore {summary['datastore']}, backend "
                        f"{summary['backend']})")
    for column in ("node", "underlay", "subnets", "state", "peers", "pods"):
        nodes.add_column(column)
    for node in summary["nodes"]:
        pods = [p["name"] for p in summary["pods"] if p["node"] == node["name"]]
        nodes.add_row(node["name"], node["underlay"], ", ".join(node["subnets"]),
                      node["phase"], str(len(node["peers"])), str(len(pods)))
    console.print(nodes)
    pods_table = Table(title="pods")
    for column in ("pod", "node", "ips", *(["reaches"] if reach is not None else [])):
        pods_table.add_column(column)
    for pod in summary["pods"]:
        row = [pod["name"], pod["node"], ", ".join(pod["ips"])]
        if reach is not None:
            answers = reach.get(pod["name"], {})
            row.append(f"{sum(answers.values())}/{len(answers)}")
        pods_table.add_row(*row)
    console.print(pods_table)


@lab_app.command("down")
def lab_down_cmd(directory: LabDir = "/run/pycni-lab") -> None:
    """Stop the agents and the datastore and remove every namespace the lab made."""
    from ..testing import Lab

    lab = Lab(directory)
    if not lab.exists:
        typer.echo(f"no lab in {directory}")
        return
    for item in lab.down():
        typer.echo(f"removed {item}")


@app.command("version")
def version_cmd(as_json: JsonOut = False) -> None:
    """Show pycni's version and the CNI spec versions it speaks."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("pycni")
    except PackageNotFoundError:
        ours = "unknown"
    if as_json:
        typer.echo(json.dumps({"version": ours, "cniVersion": CURRENT_VERSION,
                               "supportedVersions": list(SUPPORTED_VERSIONS)}))
    else:
        typer.echo(f"pycni {ours}\nCNI spec: {', '.join(SUPPORTED_VERSIONS)}")


from ._observe import register as _register_observe  # noqa: E402 - needs app and options

_register_observe(app)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="pycni")
