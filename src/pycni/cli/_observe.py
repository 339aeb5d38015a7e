"""``pycni trace``, ``pycni inspect`` and ``pycni graph``: what the network did and holds.

Thin front ends: the trace records come from :mod:`pycni.invoke` (the standalone file) and
the agent's ``/trace``; the inspection from :func:`pycni.runtime.inspect_target`; the picture
from :mod:`pycni.daemon`'s topology functions.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer

from ..spec import CNIError

TraceFileOpt = Annotated[str, typer.Option(
    "--file", envvar="PYCNI_TRACE", help="The standalone calls' trace file.")]
AgentUrl = Annotated[str, typer.Option(
    "--agent", envvar="PYCNI_AGENT_URL",
    help="The agent's metrics address (HOST:PORT or URL); 'off' to skip it.")]


def _agent_records(agent: str, since: int) -> tuple[list[dict[str, Any]], int, str | None]:
    """Records after ``since`` from the agent's ring, the next ``since``, and a note if the
    agent cannot be asked."""
    if agent in ("", "off"):
        return [], since, None
    base = agent if "://" in agent else f"http://{agent}"
    if not base.startswith(("http://", "https://")):
        return [], since, f"agent address {agent!r} is not http(s)"
    try:
        with urllib.request.urlopen(f"{base}/trace?since={since}", timeout=5) as resp:  # noqa: S310 - http(s) checked above
            body = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError) as exc:
        return [], since, f"agent at {base} not reachable ({exc})"
    from ..invoke import is_trace_record

    records = body.get("records") if isinstance(body, dict) else None
    following = body.get("next", since) if isinstance(body, dict) else since
    if not isinstance(records, list) or not isinstance(following, int):
        return [], since, f"agent at {base} sent no trace records"
    return [r for r in records if is_trace_record(r)], following, None


def _keep(rec: dict[str, Any], container: str | None, network: str | None,
          plugin: str | None, errors: bool) -> bool:
    return ((not container or str(rec.get("container", "")).startswith(container))
            and (not network or rec.get("network") == network)
            and (not plugin or rec.get("plugin") == plugin)
            and (not errors or rec.get("status") != 0))


def _print_records(records: list[dict[str, Any]], as_json: bool, header: bool) -> None:
    if as_json:
        for rec in records:
            typer.echo(json.dumps(rec, separators=(",", ":")))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=header, box=None, pad_edge=False)
    for col in ("time", "chain", "#", "command", "plugin", "network", "container", "ifname",
                "ms", "outcome"):
        table.add_column(col, overflow="fold")
    for rec in records:
        err = rec.get("error")
        if err:
            outcome = f"[red]error {err.get('code')}: {err.get('msg')}[/red]"
        else:
            res = rec.get("result") or {}
            found = res.get("ips")
            ips = [ip.get("address") for ip in found if isinstance(ip, dict)] \
                if isinstance(found, list) else []
            outcome = "ok" + (f" {', '.join(map(str, ips))}" if ips else "")
        pos = rec.get("position")
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(float(rec.get("ts", 0)))),
            str(rec.get("chain", ""))[-24:], "" if pos is None else str(pos),
            str(rec.get("command", "")), ("  " * int(rec.get("depth") or 0))
            + str(rec.get("plugin", "")), str(rec.get("network", "")),
            str(rec.get("container", ""))[:16], str(rec.get("ifname", "")),
            f"{float(rec.get('ms', 0)):.1f}", outcome)
    Console(soft_wrap=False).print(table)


def trace_cmd(
    *,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new calls.")]
    = False,
    container: Annotated[str | None, typer.Option("--container", help="Container ID (prefix).")]
    = None,
    network: Annotated[str | None, typer.Option("--network", help="Network name.")] = None,
    plugin: Annotated[str | None, typer.Option("--plugin", help="Plugin type.")] = None,
    errors: Annotated[bool, typer.Option("--errors", help="Failed calls only.")] = False,
    last: Annotated[int, typer.Option("--last", min=1, help="Calls to show at most.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per line.")] = False,
    trace_file: TraceFileOpt = "/run/pycni/trace.jsonl",
    agent: AgentUrl = "127.0.0.1:9655",
    interval: Annotated[float, typer.Option("--interval", min=0.05,
                                            help="Seconds between polls with --follow.")]
    = 1.0,
) -> None:
    """Show recent plugin calls (the agent's and standalone ones), grouped into chains."""
    from ..invoke import assign_chains, read_trace_file

    # Where following starts is taken before reading: a call appended while the existing
    # ones are read and printed is shown by the first poll (and never lost). One appended
    # between this and the read is in both; the first poll skips what was shown.
    offset = _file_size(trace_file)
    records, problems = read_trace_file(trace_file)
    from_agent, since, note = _agent_records(agent, 0)
    for msg in [*problems[:5], *([note] if note else [])]:
        typer.echo(f"pycni: {msg}", err=True)
    if len(problems) > 5:
        typer.echo(f"pycni: {len(problems) - 5} more unreadable lines", err=True)
    shown = [r for r in assign_chains([*records, *from_agent])
             if _keep(r, container, network, plugin, errors)][-last:]
    _print_records(shown, as_json, header=True)
    if not follow:
        return
    seen = {_identity(r) for r in records}
    try:
        while True:
            time.sleep(interval)
            fresh, offset = _file_tail(trace_file, offset)
            if seen:
                fresh = [r for r in fresh if _identity(r) not in seen]
                seen = set()
            more, since, _ = _agent_records(agent, since)
            new = [r for r in assign_chains([*fresh, *more])
                   if _keep(r, container, network, plugin, errors)]
            if new:
                _print_records(new, as_json, header=False)
    except KeyboardInterrupt:
        return


def _identity(rec: dict[str, Any]) -> tuple[Any, ...]:
    # Start time, process and call: two records of one file never share all three.
    return (rec.get("ts"), rec.get("pid"), rec.get("container"), rec.get("plugin"),
            rec.get("command"), rec.get("depth"))


def _file_size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def _file_tail(path: str, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete lines appended since ``offset`` (from 0 again after a rotation)."""
    from ..invoke import read_trace_lines

    size = _file_size(path)
    if size < offset:
        offset = 0
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    records, _ = read_trace_lines(data[:end].splitlines(keepends=True), path)
    return records, offset + end


def inspect_cmd(
    target: Annotated[str, typer.Argument(help="Pod (NAMESPACE/NAME), netns or container ID.")],
    *,
    cache_dir: Annotated[str, typer.Option("--cache-dir", envvar="PYCNI_CACHE_DIR",
                                           help="Result cache directory.")] = "/var/lib/cni",
    lease_dir: Annotated[str, typer.Option("--lease-dir",
                                           help="host-local's default dataDir.")]
    = "/var/lib/cni/networks",
    no_check: Annotated[bool, typer.Option("--no-check", help="Do not run the plugins' "
                                           "CHECK.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show what each attachment of a pod made (links, addresses, routes, rules, qdiscs,
    netfilter rules, leases) and how it differs from the recorded result."""
    from ..runtime import inspect_target

    try:
        report = inspect_target(target, cache_dir=cache_dir, lease_dir=lease_dir,
                                run_check=not no_check)
    except CNIError as exc:
        typer.echo(f"pycni: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    for att in report.attachments:
        table = Table(title=f"{att.network} {att.ifname} of {att.container_id} "
                            f"({' -> '.join(att.plugins)})", title_justify="left")
        for col in ("kind", "plugin", "where", "object", "details"):
            table.add_column(col, overflow="fold")
        for item in att.objects:
            table.add_row(item.kind, item.plugin, item.where, item.what,
                          json.dumps(item.details, default=str) if item.details else "")
        console.print(table)
        if att.differences:
            for diff in att.differences:
                console.print(f"[red]differs:[/red] {diff}", highlight=False)
        else:
            console.print("[green]matches the recorded result[/green]")
    if not report.attachments:
        if report.leftovers:
            console.print(f"no attachment recorded for {target}; left behind:", highlight=False)
            for item in report.leftovers:
                console.print(f"  {item.kind} {item.where}: {item.what}", highlight=False)
        else:
            console.print(f"no attachment recorded for {target}; nothing left behind",
                          highlight=False)


def graph_cmd(
    *,
    output: Annotated[str, typer.Option("--output", "-o",
                                        help="FILE.html or FILE.svg; '-' for DOT on stdout.")]
    = "topology.html",
    cache_dir: Annotated[str, typer.Option("--cache-dir", envvar="PYCNI_CACHE_DIR",
                                           help="Result cache directory.")] = "/var/lib/cni",
) -> None:
    """Draw the node: bridges, veths, pods with addresses, port mappings, vxlan peers."""
    from ..daemon import node_topology, render_html, render_svg, to_dot

    if output != "-" and not output.endswith((".html", ".svg")):
        typer.echo(f"pycni: --output must end in .html or .svg, got {output!r}", err=True)
        raise typer.Exit(2)
    try:
        topo = node_topology(cache_dir)
        dot = to_dot(topo)
        if output == "-":
            typer.echo(dot, nl=False)
            return
        svg = render_svg(dot)
        body = svg if output.endswith(".svg") else render_html(topo, svg)
        Path(output).write_bytes(body)
    except CNIError as exc:
        typer.echo(f"pycni: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"pycni: cannot write {output}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {output} ({len(topo.pods)} attachments, {len(topo.bridges)} bridges)",
               err=True)


def register(app: typer.Typer) -> None:
    """Add the three commands to ``app``."""
    app.command("trace")(trace_cmd)
    app.command("inspect")(inspect_cmd)
    app.command("graph")(graph_cmd)


__all__ = ["register"]
