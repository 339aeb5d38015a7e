"""run_plugin_bytes / run_plugin driving a tiny fake plugin through every command."""

from __future__ import annotations

import io
import ipaddress
import json
from typing import Any, ClassVar

import pytest

from pycni.skel import CmdArgs, Plugin, invoke, run_plugin, run_plugin_bytes
from pycni.spec import (
    SUPPORTED_VERSIONS,
    IPConfig,
    PluginNotAvailable,
    Result,
    UnknownContainer,
)

COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC")


class Fake(Plugin):
    """Records what it was called with; ``fail`` makes every command raise it."""

    type_name = "pyt-fake"

    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls: list[tuple[str, CmdArgs]] = []
        self.fail = fail

    def _record(self, name: str, args: CmdArgs) -> None:
        self.calls.append((name, args))
        if self.fail is not None:
            raise self.fail

    def add(self, args: CmdArgs) -> Result:
        self._record("add", args)
        return Result(ips=[IPConfig(address=ipaddress.ip_interface("10.1.0.5/24"))])

    def delete(self, args: CmdArgs) -> None:
        self._record("delete", args)

    def check(self, args: CmdArgs) -> None:
        self._record("check", args)

    def status(self, args: CmdArgs) -> None:
        self._record("status", args)

    def gc(self, args: CmdArgs) -> None:
        self._record("gc", args)


def env(command: str, **over: str | None) -> dict[str, str]:
    base = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "pyt-container-1",
        "CNI_NETNS": "/var/run/netns/pyt-c",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
        "PATH": "/usr/bin",
    }
    base.update({k: v for k, v in over.items() if v is not None})
    return {k: v for k, v in base.items() if k not in over or over[k] is not None}


def stdin(version: str = "1.1.0", **extra: Any) -> bytes:
    return json.dumps({"cniVersion": version, "name": "pytnet", "type": "pyt-fake",
                       **extra}).encode()


def run(plugin: Plugin, environ: dict[str, str], data: bytes) -> tuple[int, Any]:
    status, out = run_plugin_bytes(plugin, environ, data)
    return status, (json.loads(out) if out else None)


def error(plugin: Plugin, environ: dict[str, str], data: bytes) -> dict[str, Any]:
    status, out = run(plugin, environ, data)
    assert status == 1
    assert set(out) <= {"cniVersion", "code", "msg", "details"}
    assert isinstance(out["code"], int)
    assert out["msg"]
    return dict(out)


# --- success paths -------------------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_add_prints_result_in_config_version(version: str) -> None:
    plugin = Fake()
    status, out = run(plugin, env("ADD"), stdin(version))
    assert status == 0
    assert out["cniVersion"] == version
    assert Result.from_json(out).ips[0].address == ipaddress.ip_interface("10.1.0.5/24")
    (name, args), = plugin.calls
    assert name == "add"
    assert args.container_id == "pyt-container-1"
    assert args.path == ("/opt/cni/bin", "/usr/lib/cni")
    assert args.conf.name == "pytnet"


@pytest.mark.parametrize(("command", "version"), [("DEL", "0.1.0"), ("DEL", "1.1.0"),
                                                  ("CHECK", "0.4.0"), ("CHECK", "1.0.0"),
                                                  ("STATUS", "1.1.0"), ("GC", "1.1.0")])
def test_commands_without_output(command: str, version: str) -> None:
    plugin = Fake()
    assert run_plugin_bytes(plugin, env(command), stdin(version)) == (0, b"")
    assert [name for name, _ in plugin.calls] == [
        {"DEL": "delete"}.get(command, command.lower())]


def test_del_needs_no_netns() -> None:
    plugin = Fake()
    assert run_plugin_bytes(plugin, env("DEL", CNI_NETNS=None), stdin())[0] == 0
    assert plugin.calls[0][1].netns == ""


def test_status_needs_only_the_command() -> None:
    plugin = Fake()
    only = {"CNI_COMMAND": "STATUS"}
    assert run_plugin_bytes(plugin, only, stdin()) == (0, b"")
    args = plugin.calls[0][1]
    assert (args.container_id, args.ifname, args.netns, args.path) == ("", "", "", ())


def test_gc_needs_cni_path_and_gets_valid_attachments() -> None:
    plugin = Fake()
    attachments = [{"containerID": "pyt-1", "ifname": "eth0"}]
    data = json.dumps({"cniVersion": "1.1.0", "name": "pytnet", "type": "pyt-fake",
                       "cni.dev/valid-attachments": attachments}).encode()
    out = error(plugin, {"CNI_COMMAND": "GC"}, data)
    assert out["code"] == 4
    assert "CNI_PATH" in out["msg"]
    assert run_plugin_bytes(plugin, {"CNI_COMMAND": "GC", "CNI_PATH": "/x"}, data) == (0, b"")
    assert plugin.calls[0][1].conf.raw["cni.dev/valid-attachments"] == attachments


def test_version_output_shape_and_ignores_stdin() -> None:
    plugin = Fake()
    for data in (b"", b"garbage", stdin("0.1.0")):
        status, out = run(plugin, {"CNI_COMMAND": "VERSION"}, data)
        assert status == 0
        assert out == {"cniVersion": "1.1.0", "supportedVersions": list(SUPPORTED_VERSIONS)}
    assert plugin.calls == []


def test_version_reports_a_plugins_own_versions() -> None:
    class Old(Fake):
        supported_versions: ClassVar[tuple[str, ...]] = ("0.3.1", "0.4.0", "1.0.0")

    _, out = run(Old(), {"CNI_COMMAND": "VERSION"}, b"")
    assert out["supportedVersions"] == ["0.3.1", "0.4.0", "1.0.0"]
    err = error(Old(), env("ADD"), stdin("1.1.0"))
    assert err["code"] == 1
    assert err["msg"] == "incompatible CNI versions"


def test_run_plugin_does_not_read_stdin_for_version() -> None:
    class Unreadable(io.BytesIO):
        def read(self, *_: Any) -> bytes:
            raise AssertionError("VERSION must not read stdin")

    out = io.BytesIO()
    assert run_plugin(Fake(), environ={"CNI_COMMAND": "VERSION"}, stdin=Unreadable(),
                      stdout=out) == 0
    assert json.loads(out.getvalue())["cniVersion"] == "1.1.0"


def test_run_plugin_stdin_read_failure_is_io_failure() -> None:
    class Broken(io.BytesIO):
        def read(self, *_: Any) -> bytes:
            raise OSError("EIO")

    out = io.BytesIO()
    assert run_plugin(Fake(), environ=env("ADD"), stdin=Broken(), stdout=out) == 1
    assert json.loads(out.getvalue())["code"] == 5


def test_run_plugin_writes_result() -> None:
    out = io.BytesIO()
    assert run_plugin(Fake(), environ=env("ADD"), stdin=io.BytesIO(stdin()), stdout=out) == 0
    assert json.loads(out.getvalue())["ips"] == [{"address": "10.1.0.5/24"}]


# --- environment ---------------------------------------------------------------------------

REQUIRED = {
    "ADD": ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
    "CHECK": ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
    "DEL": ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
    "GC": ["CNI_PATH"],
    "STATUS": [],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("empty", [False, True])
def test_missing_env_is_code_4_naming_every_variable(command: str, empty: bool) -> None:
    required = REQUIRED[command]
    if not required:
        pytest.skip(f"{command} requires no variable")
    gone: dict[str, Any] = dict.fromkeys(required, "" if empty else None)
    plugin = Fake()
    out = error(plugin, env(command, **gone), stdin())
    assert out["code"] == 4
    assert out["msg"] == f"required env variables [{','.join(required)}] missing"
    assert plugin.calls == []
    for name in required:  # one at a time too
        out = error(plugin, env(command, **{name: None}), stdin())
        assert out["msg"] == f"required env variables [{name}] missing"


def test_missing_command() -> None:
    out = error(Fake(), {}, stdin())
    assert out["code"] == 4
    assert "CNI_COMMAND" in out["msg"]


@pytest.mark.parametrize("command", ["add", "GET", "INIT", "FINALIZE", " ADD", "ADD\n"])
def test_unknown_command(command: str) -> None:
    out = error(Fake(), env(command), stdin())
    assert out["code"] == 4
    assert "unknown CNI_COMMAND" in out["msg"]


HOSTILE_IDS = ["pyt container", "pyt/container", "../etc", "ünïcödé", ".hidden", "-dash",
               "_under", "ok\n", "ok\x00", "tab\there", "a;b", "\u0661\u0662"]
HOSTILE_IFNAMES = ["a" * 16, ".", "..", "a/b", "a:b", "a b", "a\tb", "eth0\n", "\u00e9" * 8,
                   "a\x01b", "\u2003x"]


@pytest.mark.parametrize(
    ("var", "value"),
    [("CNI_CONTAINERID", v) for v in HOSTILE_IDS] + [("CNI_IFNAME", v) for v in HOSTILE_IFNAMES],
)
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_hostile_container_ids_and_ifnames(var: str, value: str, command: str) -> None:
    plugin = Fake()
    out = error(plugin, env(command, **{var: value}), stdin())
    assert out["code"] == 4
    assert var in out["msg"]
    assert plugin.calls == []


@pytest.mark.parametrize("cid", ["a", "0", "pyt-1.2_3", "A" * 256,
                                 "3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755"])
def test_good_container_ids(cid: str) -> None:
    assert run(Fake(), env("ADD", CNI_CONTAINERID=cid), stdin())[0] == 0


@pytest.mark.parametrize("ifname", ["a" * 15, "eth0", "net1.100", "a-b_c", "\u00e9" * 7, "@x"])
def test_good_ifnames(ifname: str) -> None:
    assert run(Fake(), env("ADD", CNI_IFNAME=ifname), stdin())[0] == 0


def test_surrogate_escaped_env_is_refused_not_crashed() -> None:
    # os.environ decodes undecodable bytes with surrogateescape
    raw = b"eth\xff".decode("utf-8", "surrogateescape")
    assert error(Fake(), env("ADD", CNI_IFNAME=raw), stdin())["code"] == 4
    assert error(Fake(), env("ADD", CNI_CONTAINERID=raw), stdin())["code"] == 4


# --- stdin ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"", b"{", b"[1, 2]", b"null", b"\xff\xfe", b"{" * 50_000, b'"just a string"'],
)
@pytest.mark.parametrize("command", COMMANDS)
def test_malformed_stdin_is_code_6(data: bytes, command: str) -> None:
    plugin = Fake()
    out = error(plugin, env(command), data)
    assert out["code"] == 6
    assert out["cniVersion"] == "1.1.0"
    assert plugin.calls == []


@pytest.mark.parametrize("version", ["2.0.0", "0.5.0", "1.0", "abc", "1.1.0-rc1"])
@pytest.mark.parametrize("command", COMMANDS)
def test_unsupported_version_is_code_1(version: str, command: str) -> None:
    plugin = Fake()
    out = error(plugin, env(command), stdin(version))
    assert out["code"] == 1
    assert plugin.calls == []


@pytest.mark.parametrize(("command", "version"), [
    ("CHECK", "0.1.0"), ("CHECK", "0.2.0"), ("CHECK", "0.3.0"), ("CHECK", "0.3.1"),
    ("STATUS", "1.0.0"), ("STATUS", "0.4.0"), ("GC", "1.0.0"), ("GC", "0.3.1"),
])
def test_command_newer_than_config_version_is_code_1(command: str, version: str) -> None:
    plugin = Fake()
    out = error(plugin, env(command), stdin(version))
    assert out["code"] == 1
    assert out["msg"] == f"config version does not allow {command}"
    assert out["cniVersion"] == version
    assert plugin.calls == []


def test_bad_network_name_is_code_7() -> None:
    out = error(Fake(), env("ADD"), json.dumps({"cniVersion": "1.0.0", "type": "x"}).encode())
    assert out["code"] == 7
    assert "name" in out["msg"]


def test_error_json_echoes_config_version() -> None:
    out = error(Fake(UnknownContainer("gone")), env("DEL"), stdin("0.4.0"))
    assert out == {"cniVersion": "0.4.0", "code": 3, "msg": "gone"}


def test_error_quoting_a_huge_value_stays_readable() -> None:
    # Messages quote what they were given; a 100 KB container ID must not make a 100 KB error.
    cid = "c" * 100_000
    out = error(Fake(UnknownContainer(f"no attachment for {cid!r} (expected one)", cid)),
                env("DEL"), stdin())
    for key in ("msg", "details"):
        assert len(out[key]) < 5000
        assert "characters cut" in out[key]
    assert out["msg"].startswith("no attachment for 'ccc")
    assert out["msg"].endswith("(expected one)")


# --- plugin failures -----------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_cni_error_from_plugin_is_passed_through(command: str) -> None:
    out = error(Fake(PluginNotAvailable("datastore down", "etcd: refused")), env(command),
                stdin())
    assert out == {"cniVersion": "1.1.0", "code": 50, "msg": "datastore down",
                   "details": "etcd: refused"}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    "exc",
    [RuntimeError("boom"), KeyError("eth0"), OSError(17, "File exists"), ValueError(),
     RecursionError("deep"), SystemExit(3), NotImplementedError()],
    ids=lambda e: type(e).__name__,
)
def test_unexpected_exception_is_code_999_json(command: str, exc: BaseException,
                                               caplog: pytest.LogCaptureFixture) -> None:
    status, raw = run_plugin_bytes(Fake(exc), env(command), stdin())
    assert status == 1
    out = json.loads(raw)  # stdout is JSON, never a traceback
    assert b"Traceback" not in raw
    assert out["code"] == 999
    assert type(exc).__name__ in out["msg"]
    assert "pyt-fake" in out["msg"]
    if str(exc):
        assert str(exc) in out["msg"]
    assert "Traceback" in caplog.text  # the traceback goes to the log (stderr), not stdout


def test_add_returning_garbage_is_999() -> None:
    class Bad(Fake):
        def add(self, _args: CmdArgs) -> Result:
            return {"ips": []}  # type: ignore[return-value]

    out = error(Bad(), env("ADD"), stdin())
    assert out["code"] == 999
    assert "Result" in out["msg"]


def test_result_that_cannot_be_written_is_an_error_not_a_crash() -> None:
    class Unwritable(Fake):
        def add(self, _args: CmdArgs) -> Result:
            return Result(ips=[None])  # type: ignore[list-item]

    out = error(Unwritable(), env("ADD"), stdin())
    assert out["code"] == 999


def test_result_without_address_in_0_2_0_is_code_1() -> None:
    class Empty(Fake):
        def add(self, _args: CmdArgs) -> Result:
            return Result()

    assert error(Empty(), env("ADD"), stdin("0.2.0"))["code"] == 1


def test_invoke_raises_instead_of_printing() -> None:
    with pytest.raises(UnknownContainer):
        invoke(Fake(UnknownContainer("gone")), env("DEL"), stdin())
    result = invoke(Fake(), env("ADD"), stdin("0.3.1"))
    assert isinstance(result, Result)
    assert result.cni_version == "0.3.1"
