"""The node's network as a picture: bridges, veths, pods with addresses, port mappings,
vxlan tunnels and their peers.

:func:`node_topology` reads the node (the calling thread's namespace) and the result cache;
:func:`to_dot` turns that into Graphviz's DOT, laid out by Graphviz's ``dot`` (Debian's
``graphviz`` package) run as a subprocess with the DOT on its stdin; :func:`render_html`
wraps the SVG in a page that works offline (nothing is fetched). ``pycni graph`` writes the
page or the SVG; the agent serves it at ``/topology`` (refreshed every few seconds).
"""

from __future__ import annotations

import html
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from .. import host
from ..runtime import DEFAULT_CACHE_DIR, ResultCache
from ..spec import CNIError, KernelError, Result


@dataclass
class PodNode:
    """One attachment: its pod, interface, addresses, host-side link and port mappings."""

    container_id: str
    pod: str
    network: str
    ifname: str
    addresses: list[str]
    host_link: str | None
    ports: list[str] = field(default_factory=list)


@dataclass
class Topology:
    """What the picture shows."""

    bridges: dict[str, list[str]]  # bridge -> its addresses
    ports: dict[str, str]  # host link -> its bridge
    tunnels: dict[str, list[str]]  # vxlan link -> remote peers (FDB destinations)
    pods: list[PodNode]


def _pod_name(args: list[tuple[str, str]], container_id: str) -> str:
    kv = dict(args)
    if kv.get("K8S_POD_NAME"):
        ns = kv.get("K8S_POD_NAMESPACE", "")
        return f"{ns}/{kv['K8S_POD_NAME']}" if ns else kv["K8S_POD_NAME"]
    return container_id[:12]


def _ports(capability_args: dict[str, Any]) -> list[str]:
    out = []
    for mapping in capability_args.get("portMappings") or []:
        if isinstance(mapping, dict):
            proto = mapping.get("protocol", "tcp")
            out.append(f"{mapping.get('hostIP') or '*'}:{mapping.get('hostPort')} -> "
                       f"{mapping.get('containerPort')}/{proto}")
    return out


def node_topology(cache_dir: str = DEFAULT_CACHE_DIR) -> Topology:
    """Read the node: links of this namespace and the attachments in the result cache."""
    state = host.namespace_state()
    names = {link.index: link.name for link in state.links}
    bridges = {link.name: list(link.addresses) for link in state.links if link.kind == "bridge"}
    ports = {link.name: names[link.master] for link in state.links
             if link.master is not None and names.get(link.master) in bridges}
    tunnels: dict[str, list[str]] = {link.name: [] for link in state.links
                                     if link.kind == "vxlan"}
    for dev, entry in state.fdb:
        if str(entry.dst) not in tunnels.setdefault(dev, []):
            tunnels[dev].append(str(entry.dst))
    pods = []
    for att in ResultCache(cache_dir).attachments():
        try:
            result = Result.from_json(att.result) if att.result else Result()
        except CNIError:
            result = Result()
        # The host end of the pod's link: the result also lists the bridge without sandbox.
        host_link = next((i.name for i in result.interfaces
                          if not i.sandbox and i.name not in bridges), None)
        sandbox = [n for n, i in enumerate(result.interfaces) if i.sandbox]
        addrs = [str(ip.address) for ip in result.ips
                 if ip.interface is None or ip.interface in sandbox]
        pods.append(PodNode(att.container_id, _pod_name(att.cni_args, att.container_id),
                            att.network_name, att.ifname, addrs, host_link,
                            _ports(att.capability_args)))
    return Topology(bridges, ports, tunnels, pods)


def _q(text: str) -> str:
    """A DOT double-quoted string: backslashes and quotes escaped, lines as ``\\n``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "\\n".join(escaped.splitlines() or [""]) + '"'


def to_dot(topo: Topology) -> str:
    """The DOT source of the picture (every name and label quoted and escaped)."""
    lines = ["digraph topology {", '  graph [rankdir=LR, fontname="sans-serif"];',
             '  node [fontname="sans-serif", fontsize=10];', '  edge [fontsize=9];']
    for bridge, addrs in sorted(topo.bridges.items()):
        lines.append(f"  {_q('br:' + bridge)} [shape=box, style=filled, fillcolor=lightblue, "
                     f"label={_q(chr(10).join([bridge, *addrs]))}];")
    for tunnel, peers in sorted(topo.tunnels.items()):
        lines.append(f"  {_q('vx:' + tunnel)} [shape=hexagon, style=filled, "
                     f"fillcolor=khaki, label={_q(tunnel + chr(10) + 'vxlan')}];")
        for peer in peers:
            lines.append(f"  {_q('peer:' + peer)} [shape=oval, label={_q('peer ' + peer)}];")
            lines.append(f"  {_q('vx:' + tunnel)} -> {_q('peer:' + peer)} "
                         "[style=dashed, dir=both];")
    for i, pod in enumerate(topo.pods):
        pid = f"pod:{i}:{pod.container_id}"
        label = [pod.pod, f"{pod.ifname} ({pod.network})", *pod.addresses,
                 *(f"port {p}" for p in pod.ports)]
        lines.append(f"  {_q(pid)} [shape=box, style=\"rounded,filled\", fillcolor=palegreen,"
                     f" label={_q(chr(10).join(label))}];")
        if pod.host_link:
            lines.append(f"  {_q('veth:' + pod.host_link)} [shape=ellipse, "
                         f"label={_q(pod.host_link)}];")
            lines.append(f"  {_q(pid)} -> {_q('veth:' + pod.host_link)} "
                         f"[dir=none, label={_q('veth')}];")
            port_of = topo.ports.get(pod.host_link)
            if port_of:
                lines.append(f"  {_q('veth:' + pod.host_link)} -> {_q('br:' + port_of)} "
                             "[dir=none];")
    lines.append("}")
    return "\n".join(lines) + "\n"


class GraphError(KernelError):
    """The picture cannot be drawn (Graphviz missing or failing)."""


def render_svg(dot_source: str) -> bytes:
    """Lay out and draw ``dot_source`` with Graphviz's ``dot`` (DOT on stdin, no shell)."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphError("Graphviz's dot is not installed (apt-get install graphviz)")
    try:
        proc = subprocess.run([exe, "-Tsvg"], input=dot_source.encode(), capture_output=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GraphError(f"running {exe} failed: {exc}") from exc
    if proc.returncode != 0:
        raise GraphError(f"dot could not draw the topology (exit {proc.returncode})",
                         proc.stderr.decode(errors="replace")[-500:])
    return proc.stdout


def render_html(topo: Topology, svg: bytes, *, refresh: int = 0) -> bytes:
    """A self-contained page: the SVG and a table of the pods (text a script can check)."""
    rows = "".join(
        f"<tr><td>{html.escape(p.pod)}</td><td>{html.escape(p.network)}</td>"
        f"<td>{html.escape(p.ifname)}</td><td>{html.escape(', '.join(p.addresses))}</td>"
        f"<td>{html.escape(p.host_link or '')}</td>"
        f"<td>{html.escape(topo.ports.get(p.host_link or '', ''))}</td>"
        f"<td>{html.escape('; '.join(p.ports))}</td></tr>"
        for p in topo.pods)
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    svg_text = svg.decode(errors="replace")
    svg_text = svg_text[svg_text.find("<svg"):] if "<svg" in svg_text else svg_text
    page = (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
        f"{meta}<title>pycni node topology</title>"
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "td,th{border:1px solid #aaa;padding:2px 6px;font-size:12px}</style></head><body>"
        "<h1>pycni node topology</h1>"
        f"<div id=\"graph\">{svg_text}</div>"
        "<h2>Attachments</h2><table id=\"pods\"><tr><th>pod</th><th>network</th>"
        "<th>ifname</th><th>addresses</th><th>host link</th><th>bridge</th><th>ports</th>"
        f"</tr>{rows}</table></body></html>")
    return page.encode()


def topology_page(query: str, cache_dir: str = DEFAULT_CACHE_DIR) -> tuple[bytes, str]:
    """The agent's ``/topology`` (``?format=svg|dot|html``): body and content type."""
    fmt = (parse_qs(query).get("format") or ["html"])[0]
    topo = node_topology(cache_dir)
    dot = to_dot(topo)
    if fmt == "dot":
        return dot.encode(), "text/vnd.graphviz"
    svg = render_svg(dot)
    if fmt == "svg":
        return svg, "image/svg+xml"
    if fmt != "html":
        raise ValueError(f"format must be html, svg or dot, got {fmt!r}")
    return render_html(topo, svg, refresh=5), "text/html; charset=utf-8"


__all__ = ["GraphError", "PodNode", "Topology", "node_topology", "render_html", "render_svg",
           "to_dot", "topology_page"]
