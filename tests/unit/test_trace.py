"""Call tracing: records, redaction, chains, the agent's ring and the rotated file."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from pycni.daemon import Metrics, TraceRing
from pycni.daemon._metrics import StatusServer
from pycni.invoke import (
    REDACTED,
    append_to_file,
    assign_chains,
    call_record,
    read_trace_file,
    run_in_process,
)
from pycni.testing import wait_for

SECRETS = ("s3cr3t-token-value", "hunter2", "AbCdEfBearerValue", "kubetokenxyz", "argsecret")


def _config(**extra: object) -> bytes:
    return json.dumps({
        "cniVersion": "1.0.0", "name": "pytnet", "type": "bridge",
        "kubernetes": {"kubeconfig": "/etc/kube.conf", "token": SECRETS[0],
                       "nested": [{"password": SECRETS[1]}]},
        "headers": {"Authorization": f"Bearer {SECRETS[2]}"},
        "inline": f"users:\n- user:\n    token: {SECRETS[3]}\n",
        "apiKey": "k", **extra}).encode()


def _record(cmd: str = "ADD", *, plugin: str = "bridge", ts: float = 1000.0, status: int = 0,
            out: bytes = b'{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.2/24"}]}',
            stdin: bytes | None = None, container: str = "c1") -> dict[str, object]:
    env = {"CNI_COMMAND": cmd, "CNI_CONTAINERID": container, "CNI_NETNS": "/run/netns/x",
           "CNI_IFNAME": "eth0", "CNI_ARGS": f"K8S_POD_NAME=p;API_TOKEN={SECRETS[4]}"}
    return call_record(plugin, env, stdin if stdin is not None else _config(), status, out,
                       started=ts, seconds=0.002, source="agent")


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_record_redacts_every_secret() -> None:
    rec = _record()
    text = json.dumps(rec)
    _assert_no_secret(text)
    assert rec["config"]["kubernetes"]["token"] == REDACTED  # type: ignore[index]
    assert rec["config"]["kubernetes"]["kubeconfig"] == "/etc/kube.conf"  # type: ignore[index]
    assert rec["args"] == f"K8S_POD_NAME=p;API_TOKEN={REDACTED}"
    assert rec["network"] == "pytnet"
    assert rec["result"] == {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.2/24"}]}


def test_failed_call_keeps_code_and_message() -> None:
    err = b'{"cniVersion":"1.0.0","code":7,"msg":"invalid \\"mtu\\"","details":"got 1e30"}'
    rec = _record(status=1, out=err)
    assert rec["error"] == {"code": 7, "msg": 'invalid "mtu"', "details": "got 1e30"}
    assert rec["result"] is None


def test_three_calls_form_one_chain_in_order() -> None:
    first = _record(plugin="bridge", ts=1000.0)
    prev = _config(prevResult={"cniVersion": "1.0.0"})
    second = _record(plugin="tuning", ts=1000.1, stdin=prev)
    third = _record(plugin="portmap", ts=1000.2, stdin=prev)
    other = _record(plugin="bridge", ts=1000.15, container="c2")
    again = _record(plugin="bridge", ts=1001.0)  # a new ADD (no prevResult): a new chain
    chained = assign_chains([third, other, first, again, second])
    mine = [r for r in chained if r["container"] == "c1"]
    chains = {r["chain"] for r in mine[:3]}
    assert len(chains) == 1
    assert [(r["plugin"], r["position"]) for r in mine[:3]] == [
        ("bridge", 0), ("tuning", 1), ("portmap", 2)]
    assert mine[3]["chain"] not in chains
    assert next(r for r in chained if r["container"] == "c2")["chain"] not in chains


def test_ring_stays_bounded_under_10000_calls() -> None:
    ring = TraceRing(500)
    rec = _record()
    for _ in range(10_000):
        ring.append(rec)
    assert len(ring) == 500
    records, last = ring.since(0)
    assert [r["seq"] for r in records] == list(range(9501, 10_001))
    assert last == 10_000
    assert ring.since(last)[0] == []
    _assert_no_secret(json.dumps(records))


def test_file_stays_bounded_under_10000_calls(tmp_path: Path) -> None:
    path = str(tmp_path / "trace.jsonl")
    limit = 256 << 10
    rec = _record()
    for i in range(10_000):
        append_to_file({**rec, "ts": 1000.0 + i}, path, limit)
    size, backup = Path(path).stat().st_size, Path(path + ".1").stat().st_size
    assert size <= limit
    assert backup <= limit
    records, problems = read_trace_file(path)
    assert problems == []
    assert records[-1]["ts"] == 1000.0 + 9999  # the newest is kept
    assert len(records) > 100
    _assert_no_secret(Path(path).read_text() + Path(path + ".1").read_text())


def test_a_huge_record_is_summarised(tmp_path: Path) -> None:
    path = str(tmp_path / "t.jsonl")
    append_to_file(_record(stdin=_config(big="x" * 200_000)), path, 1 << 20)
    assert Path(path).stat().st_size < 70_000
    records, _ = read_trace_file(path)
    assert "truncated" in records[0]["config"]


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pycni.cli", *argv], capture_output=True,
                          text=True, timeout=60, check=False)


def test_cli_reads_a_corrupt_and_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    good = json.dumps(_record())
    path.write_text(f"{good}\nnot json at all\n{good[:40]}")
    out = _cli("trace", "--file", str(path), "--agent", "off")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert "line 2 is not a JSON record" in out.stderr
    assert "line 3 is not a JSON record (truncated: no line end)" in out.stderr
    assert "bridge" in out.stdout
    _assert_no_secret(out.stdout)
    js = _cli("trace", "--file", str(path), "--agent", "off", "--json")
    assert [json.loads(line)["plugin"] for line in js.stdout.splitlines()] == ["bridge"]
    _assert_no_secret(js.stdout)


def test_cli_filters_errors(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    err = b'{"cniVersion":"1.0.0","code":11,"msg":"try later"}'
    path.write_text(json.dumps(_record()) + "\n"
                    + json.dumps(_record(plugin="portmap", status=1, out=err, ts=1001)) + "\n")
    out = _cli("trace", "--file", str(path), "--agent", "off", "--errors", "--json")
    assert [json.loads(line)["error"]["code"] for line in out.stdout.splitlines()] == [11]
    missing = _cli("trace", "--file", str(tmp_path / "none.jsonl"), "--agent", "off")
    assert missing.returncode == 0
    assert "Traceback" not in missing.stderr


def test_agent_endpoint_serves_the_ring() -> None:
    ring = TraceRing(10)
    ring.append(_record())

    def page(query: str) -> tuple[bytes, str]:
        return ring.answer(query), "application/json"

    server = StatusServer(("127.0.0.1", 0), Metrics(), lambda: True, lambda: True,
                          {"/trace": page})
    server.start()
    try:
        host, port = server.address
        with urllib.request.urlopen(f"http://{host}:{port}/trace?since=0", timeout=5) as resp:
            body = json.loads(resp.read())
        assert [r["plugin"] for r in body["records"]] == ["bridge"]
        assert body["next"] == 1
        _assert_no_secret(json.dumps(body))
        out = _cli("trace", "--file", "/nonexistent/t.jsonl", "--agent", f"{host}:{port}",
                   "--json")
        assert [json.loads(line)["source"] for line in out.stdout.splitlines()] == ["agent"]
    finally:
        server.stop()


def test_cli_skips_records_of_the_wrong_shape(tmp_path: Path) -> None:
    """JSON objects that look like records but carry the wrong types (a hand-edited or
    foreign file) are named and skipped; the good records are still shown."""
    path = tmp_path / "trace.jsonl"
    good = json.dumps(_record())
    bad = ['{"ts":1,"ms":"abc"}', '{"ts":1,"depth":"x"}', '{"ts":1,"result":[1]}',
           '{"ts":1,"error":"boom","status":1}', '{"ts":1e300}', '{"ts":1,"plugin":[]}']
    path.write_bytes("\n".join([good, *bad]).encode() + b"\n\xff\xfe garbage\n" +
                     good[:50].encode())
    for fmt in ([], ["--json"]):
        out = _cli("trace", "--file", str(path), "--agent", "off", *fmt)
        assert out.returncode == 0, out.stderr
        assert "Traceback" not in out.stderr + out.stdout
        problems = out.stderr.splitlines()
        assert problems[:5] == [f"pycni: {path} line {n} is not a trace record"
                                for n in range(2, 7)]
        assert problems[5:] == ["pycni: 3 more unreadable lines"]
        assert "bridge" in out.stdout
    js = _cli("trace", "--file", str(path), "--agent", "off", "--json")
    assert [json.loads(line)["plugin"] for line in js.stdout.splitlines()] == ["bridge"]


class _Lines:
    """A process's stdout lines, read on a thread (a test waits for them with a deadline)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout
        self._thread = threading.Thread(target=lambda: self.lines.extend(iter(stream.readline,
                                                                              "")), daemon=True)
        self._thread.start()

    def records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in list(self.lines) if line.strip()]


def _follow(path: Path) -> subprocess.Popen[str]:
    # --last beyond what a test writes: a follower that starts late (a loaded machine) shows
    # calls appended before it read the file in its first table, not cut by --last's 200.
    return subprocess.Popen([sys.executable, "-m", "pycni.cli", "trace", "--follow", "--json",
                             "--file", str(path), "--agent", "off", "--interval", "0.05",
                             "--last", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    _out, err = proc.communicate(timeout=30)
    return err


def test_follow_shows_a_call_made_after_it_started(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "trace.jsonl"
    monkeypatch.setenv("PYCNI_TRACE", str(path))
    proc = _follow(path)
    try:
        out = _Lines(proc)
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "pytfollow", "CNI_NETNS": "/nonexistent",
               "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent"}
        conf = {"cniVersion": "1.0.0", "name": "pytfollow", "type": "bridge",
                "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                         "subnet": "10.1.2.0/24", "token": SECRETS[0]}}
        status, _ = run_in_process("host-local", env, json.dumps(conf).encode())
        assert status == 0
        assert wait_for(lambda: any(r["container"] == "pytfollow" for r in out.records()),
                        timeout=60), out.lines
        (rec,) = out.records()
        assert (rec["plugin"], rec["command"], rec["status"]) == ("host-local", "ADD", 0)
        _assert_no_secret(json.dumps(out.lines))
    finally:
        assert "Traceback" not in _stop(proc)


def test_follow_loses_no_call_made_while_it_starts(tmp_path: Path) -> None:
    """Calls appended while ``--follow`` reads and prints what was there are shown once."""
    path = tmp_path / "trace.jsonl"
    rec = _record()
    with path.open("w") as fh:
        for i in range(3000):
            fh.write(json.dumps({**rec, "container": f"old{i}", "ts": 1000.0 + i}) + "\n")
    proc = _follow(path)
    try:
        out = _Lines(proc)
        for i in range(300):
            append_to_file({**rec, "container": f"new{i}", "ts": 5000.0 + i}, str(path),
                           64 << 20)
            time.sleep(0.002)
        assert wait_for(lambda: any(r["container"] == "new299" for r in out.records()),
                        timeout=60)
        new = [r["container"] for r in out.records() if str(r["container"]).startswith("new")]
        assert new == [f"new{i}" for i in range(300)]
    finally:
        _stop(proc)


def test_a_secret_key_spelt_with_json_escapes_is_redacted() -> None:
    """Configs without a secret-looking word skip the redaction walk; a key spelt with
    ``\\u`` escapes (``"\\u0074oken"`` is ``token``) must not slip past that shortcut."""
    stdin = (b'{"cniVersion":"1.0.0","name":"pytnet","type":"bridge",'
             b'"k":{"\\u0074oken":"' + SECRETS[0].encode() + b'"},'
             b'"h":"\\u0042earer ' + SECRETS[2].encode() + b'"}')
    rec = _record(stdin=stdin, out=b'{"cniVersion":"1.0.0","\\u0074oken":"hunter2"}')
    _assert_no_secret(json.dumps(rec))
    assert rec["config"]["k"] == {"token": REDACTED}  # type: ignore[index]
    assert rec["result"] == {"cniVersion": "1.0.0", "token": REDACTED}
    plain = _record(stdin=b'{"cniVersion":"1.0.0","name":"pytnet","type":"bridge","x":"y"}')
    assert plain["config"] == {"cniVersion": "1.0.0", "name": "pytnet", "type": "bridge",
                               "x": "y"}
