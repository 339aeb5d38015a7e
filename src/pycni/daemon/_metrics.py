"""The agent's observability: Prometheus metrics and the /healthz, /readyz, /metrics endpoint.

Metrics (all prefixed ``pycni_agent_``, labels ``plugin`` and ``command``)::

    requests_total                 calls served
    errors_total{code}             calls that ended with a CNI error (code from its JSON)
    request_duration_seconds       histogram of the in-process run
    in_flight                      calls being run now
    ipam_pool_size{network,range}        addresses a host-local range set can hand out
    ipam_pool_allocated{network,range}   addresses reserved in it (read at scrape time)
    netfilter_{calls,transactions,batches,fallbacks}_total{backend}
                                   netfilter writes merged per burst (iptables nat table,
                                   nftables): see pycni.host.BurstCounters

README.md ("Agent metrics") says what each tells.

The pool gauges cover every host-local network the agent has seen a call for (as the IPAM of
a main plugin or directly); they are computed from the store when scraped. A config the agent
saw before is not parsed again: the plugin already parsed it for the call itself.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..spec import CNIError, DecodingFailure, NetworkConfig, decode_json
from ._intake import Intake, Limits, RequestError, send_nowait

log = logging.getLogger("pycni.agent")

#: Commands get their own label value; anything else a caller sends is "other".
COMMANDS = frozenset({"ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"})

#: Latency buckets (seconds): CNI calls take milliseconds to seconds.
_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: Distinct configs whose host-local network is remembered (the least recently seen goes
#: first). A node has few networks, but a config carries per-pod runtimeConfig and DEL/CHECK
#: a prevResult, so several configs name one network.
_PARSED_MAX = 512


def command_label(command: str) -> str:
    """A bounded label value for CNI_COMMAND (callers control it)."""
    return command if command in COMMANDS else "other"


class PoolCollector(Collector):
    """IPAM pool size and usage of the host-local networks seen so far."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], Any] = {}
        #: (is the plugin host-local, digest of the config) -> its host-local config, None if
        #: it has none. The digest keeps a 4 MiB config from being held here.
        self._parsed: OrderedDict[tuple[bool, bytes], Any] = OrderedDict()

    def observe(self, stdin: bytes, plugin_type: str) -> None:
        """Remember the host-local network a call's config uses, if any.

        Each distinct config is parsed once (the plugin parsed it already for the call);
        a later call with the same bytes reuses that parse.
        """
        key = (plugin_type == "host-local", hashlib.blake2b(stdin, digest_size=16).digest())
        with self._lock:
            if key in self._parsed:
                self._parsed.move_to_end(key)
                self._remember(self._parsed[key])
                return
        hl = _host_local(stdin, plugin_type)  # outside the lock: other calls go on
        with self._lock:
            self._parsed[key] = hl
            while len(self._parsed) > _PARSED_MAX:
                self._parsed.popitem(last=False)
            self._remember(hl)

    def _remember(self, hl: Any) -> None:
        """Count ``hl``'s network with its latest config (the caller holds the lock)."""
        if hl is not None:
            self._seen[(hl.network, hl.data_dir)] = hl

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Sizes from the configs, allocations from the stores' file names."""
        size = GaugeMetricFamily("pycni_agent_ipam_pool_size",
                                 "Addresses a host-local range set can hand out",
                                 labels=["network", "range"])
        used = GaugeMetricFamily("pycni_agent_ipam_pool_allocated",
                                 "Addresses reserved in a host-local range set",
                                 labels=["network", "range"])
        with self._lock:
            seen = list(self._seen.values())
        for hl in seen:
            try:
                names = hl.store().names()
            except CNIError:
                names = set()
            ips = []
            for name in names:
                try:
                    ips.append(ipaddress.ip_address(name))
                except ValueError:
                    continue  # the lock file and last_reserved_ip.N
            for rs in hl.range_sets:
                label = [hl.network, str(rs)]
                size.add_metric(label, rs.size())
                used.add_metric(label, sum(1 for ip in ips if rs.contains(ip)))
        yield size
        yield used


class NetfilterCollector(Collector):
    """How this process's netfilter writes were merged into transactions, per backend."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        """The counters as they are now (module-level, so shared by agents in a process)."""
        from ..host.netfilter import nat_counters, nft_counters

        now = {"iptables": nat_counters(), "nftables": nft_counters()}
        for field, text in (("calls", "Netfilter writes asked for"),
                            ("transactions", "Kernel transactions they took"),
                            ("batches", "Transactions that merged several writes"),
                            ("fallbacks", "Merged transactions refused and redone one by one")):
            family = CounterMetricFamily(f"pycni_agent_netfilter_{field}", text,
                                         labels=["backend"])
            for backend, counters in now.items():
                family.add_metric([backend], getattr(counters, field))
            yield family


def _host_local(stdin: bytes, plugin_type: str) -> Any:
    """The host-local config a call's config uses; None if none (or it is invalid)."""
    from ..plugins.ipam.host_local import HostLocalConfig

    try:
        conf = NetworkConfig.parse(stdin)
        ipam_type = (conf.ipam or {}).get("type")
        if ipam_type != "host-local" and plugin_type != "host-local":
            return None
        return HostLocalConfig.load(conf, {})
    except (CNIError, ValueError, TypeError):
        return None  # the plugin reported the error; nothing to count


class Metrics:
    """The agent's metrics in their own registry (several agents may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["plugin", "command"]
        self.requests = Counter("pycni_agent_requests", "CNI calls served", labels,
                                registry=self.registry)
        self.errors = Counter("pycni_agent_errors", "CNI calls that returned an error",
                              [*labels, "code"], registry=self.registry)
        self.latency = Histogram("pycni_agent_request_duration_seconds",
                                 "Time to run a CNI call in the agent", labels,
                                 buckets=_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("pycni_agent_in_flight", "CNI calls being run now",
                               registry=self.registry)
        self.pools = PoolCollector()
        self.registry.register(self.pools)
        self.registry.register(NetfilterCollector())

    def record(self, plugin: str, command: str, seconds: float, status: int,
               stdout: bytes) -> None:
        """Count one finished call; a failed one by the code in its error JSON."""
        cmd = command_label(command)
        self.requests.labels(plugin, cmd).inc()
        self.latency.labels(plugin, cmd).observe(seconds)
        if status != 0:
            try:
                code = str(int(decode_json(stdout, "plugin error")["code"]))
            except (DecodingFailure, ValueError, KeyError, TypeError):
                code = "unknown"
            self.errors.labels(plugin, cmd, code).inc()

    def exposition(self) -> bytes:
        """The text format a Prometheus scrape gets."""
        return generate_latest(self.registry)


#: A page the status server serves: query string -> (body, content type). ValueError: 400.
Page = Callable[[str], tuple[bytes, str]]

#: The request head a scrape sends is a few hundred bytes.
_MAX_HEAD = 8192
#: Seconds a client has to send its request head, and to take the reply.
_HTTP_TIMEOUT = 5.0
#: Scrapes answered at once, and waiting for an answerer.
_HTTP_WORKERS = 2
_HTTP_QUEUE = 32
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


def _head_size(data: bytearray) -> int | None:
    end = data.find(b"\r\n\r\n")
    return None if end < 0 else end + 4


def _response(code: int, body: bytes, ctype: str = "text/plain", *, head_only: bool = False
              ) -> bytes:
    head = (f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head if head_only else head + body


class StatusServer:
    """/healthz, /readyz and /metrics over HTTP on a local address, in background threads.

    One intake thread reads request heads (:class:`~pycni.daemon._intake.Intake`: idle and
    slow clients cost a socket, not a thread); :data:`_HTTP_WORKERS` threads answer them.
    """

    def __init__(self, address: tuple[str, int], metrics: Metrics,
                 healthy: Callable[[], bool], ready: Callable[[], bool],
                 pages: Mapping[str, Page] | None = None) -> None:
        """``pages``: more paths to serve, each a function of the query string."""
        self.metrics = metrics
        self.pages = dict(pages or {})
        self.healthy = healthy
        self.ready = ready
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._sock = socket.create_server(address, family=family)
        self._pool = ThreadPoolExecutor(_HTTP_WORKERS, thread_name_prefix="pycni-agent-http")
        self._queued = threading.BoundedSemaphore(_HTTP_QUEUE)
        self._intake = Intake(self._sock, Limits(max_bytes=_MAX_HEAD, deadline=_HTTP_TIMEOUT),
                              name="pycni-agent-http", complete=_head_size,
                              on_request=self._take, on_error=self._refuse)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): port 0 in the config picks a free one."""
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Serve in the background."""
        self._intake.start()

    def stop(self) -> None:
        """Stop serving and close the port."""
        self._intake.stop()
        self._sock.close()
        self._pool.shutdown(wait=True)

    @staticmethod
    def _refuse(conn: socket.socket, _error: RequestError) -> None:
        send_nowait(conn, _response(431, b"request head too large\n"))

    def _take(self, conn: socket.socket, head: bytes) -> None:
        if not self._queued.acquire(blocking=False):
            send_nowait(conn, _response(503, b"busy\n"))
            conn.close()
            return
        try:
            self._pool.submit(self._answer, conn, head)
        except RuntimeError:
            self._queued.release()
            conn.close()

    def _answer(self, conn: socket.socket, head: bytes) -> None:
        try:
            with conn:
                conn.settimeout(_HTTP_TIMEOUT)
                conn.sendall(self._respond(head))
        except OSError:
            pass  # the client went away
        finally:
            self._queued.release()

    def _respond(self, head: bytes) -> bytes:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(request_line) != 3 or not request_line[2].startswith("HTTP/"):
            return _response(400, b"bad request\n")
        method, target, _ = request_line
        if method not in ("GET", "HEAD"):
            return _response(405, b"method not allowed\n")
        head_only = method == "HEAD"
        path = target.split("?", 1)[0]
        if path == "/metrics":
            return _response(200, self.metrics.exposition(),
                             "text/plain; version=0.0.4; charset=utf-8", head_only=head_only)
        if path in ("/healthz", "/readyz"):
            ok = self.healthy() if path == "/healthz" else self.ready()
            return _response(200 if ok else 503, b"ok\n" if ok else b"not ready\n",
                             head_only=head_only)
        return self._page(path, target, head_only=head_only)

    def _page(self, path: str, target: str, *, head_only: bool) -> bytes:
        page = self.pages.get(path)
        if page is None:
            return _response(404, b"not found\n", head_only=head_only)
        query = target.split("?", 1)[1] if "?" in target else ""
        try:
            body, ctype = page(query)
        except ValueError as exc:
            return _response(400, f"{exc}\n".encode(), head_only=head_only)
        except Exception as exc:  # a page that fails answers 500, it does not hang
            log.warning("page %s failed: %s", path, exc)
            return _response(500, f"{path} failed: {exc}\n".encode(), head_only=head_only)
        return _response(200, body, ctype, head_only=head_only)


def parse_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as a bind address; ValueError if malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


__all__ = ["COMMANDS", "Metrics", "PoolCollector", "StatusServer", "command_label",
           "parse_address"]
