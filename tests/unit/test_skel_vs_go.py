"""Bad calls fail with the same error code as libcni's skel (the Go loopback is the oracle).

Every case here fails before the plugin touches a namespace, so no privileges are needed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pycni.skel import CmdArgs, Plugin, run_plugin_bytes
from pycni.spec import Result
from pycni.testing import GO_PLUGIN_DIR

GO_LOOPBACK = str(Path(GO_PLUGIN_DIR) / "loopback")

pytestmark = [
    pytest.mark.differential,
    pytest.mark.skipif(not os.access(GO_LOOPBACK, os.X_OK), reason=f"{GO_LOOPBACK} missing"),
]


class NeverCalled(Plugin):
    """Every case must be refused before the plugin runs."""

    type_name = "loopback"
    supported_versions = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0")

    def add(self, args: CmdArgs) -> Result:
        raise AssertionError(f"add() reached with {args}")

    def delete(self, args: CmdArgs) -> None:
        raise AssertionError(f"delete() reached with {args}")

    def check(self, args: CmdArgs) -> None:
        raise AssertionError(f"check() reached with {args}")


def conf(**over: Any) -> bytes:
    base = {"cniVersion": "1.0.0", "name": "pytnet", "type": "loopback"}
    base.update(over)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


GOOD_ENV = {"CNI_CONTAINERID": "pyt-1", "CNI_NETNS": "/nonexistent/pyt", "CNI_IFNAME": "lo",
            "CNI_PATH": GO_PLUGIN_DIR}

CASES: list[tuple[str, dict[str, str], bytes]] = [
    ("ADD", {"CNI_CONTAINERID": ""}, conf()),
    ("ADD", {"CNI_NETNS": "", "CNI_PATH": ""}, conf()),
    ("DEL", {"CNI_IFNAME": ""}, conf()),
    ("CHECK", {"CNI_CONTAINERID": "", "CNI_NETNS": "", "CNI_IFNAME": "", "CNI_PATH": ""},
     conf()),
    ("ADD", {"CNI_CONTAINERID": "a b"}, conf()),
    ("DEL", {"CNI_CONTAINERID": "../x"}, conf()),
    ("ADD", {"CNI_CONTAINERID": ".dot"}, conf()),
    ("ADD", {"CNI_CONTAINERID": "ünï"}, conf()),
    ("ADD", {"CNI_IFNAME": "a" * 16}, conf()),
    ("ADD", {"CNI_IFNAME": "."}, conf()),
    ("DEL", {"CNI_IFNAME": ".."}, conf()),
    ("ADD", {"CNI_IFNAME": "a/b"}, conf()),
    ("ADD", {"CNI_IFNAME": "a:b"}, conf()),
    ("CHECK", {"CNI_IFNAME": "a b"}, conf()),
    ("ADD", {}, b""),
    ("ADD", {}, b"{"),
    ("DEL", {}, b"[1]"),
    ("ADD", {}, b"not json"),
    ("ADD", {}, conf(name=None)),
    ("ADD", {}, conf(name="bad name")),
    ("DEL", {}, conf(name="-x")),
    ("ADD", {}, conf(cniVersion="2.0.0")),
    ("ADD", {}, conf(cniVersion="1.0")),
    ("DEL", {}, conf(cniVersion="0.5.0")),
    ("ADD", {}, conf(cniVersion="1.1.0")),  # the Go plugins stop at 1.0.0, and so does ours
    ("CHECK", {}, conf(cniVersion="0.3.1")),
    ("CHECK", {}, conf(cniVersion="0.2.0")),
    ("CHECK", {}, conf(cniVersion="0.1.0")),
    ("FOO", {}, conf()),
]


def _go(command: str, env: dict[str, str], stdin: bytes) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run([GO_LOOPBACK], input=stdin, capture_output=True, timeout=30,
                          env={"CNI_COMMAND": command, **env}, check=False)
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize(("command", "over", "stdin"), CASES,
                         ids=[f"{c}-{o}-{s[:30]!r}" for c, o, s in CASES])
def test_same_error_code_as_libcni(command: str, over: dict[str, str], stdin: bytes) -> None:
    env = {k: v for k, v in {**GOOD_ENV, **over}.items() if v}
    go_status, go_out = _go(command, env, stdin)
    status, raw = run_plugin_bytes(NeverCalled(), {"CNI_COMMAND": command, **env}, stdin)
    ours = json.loads(raw)
    assert (status, ours["code"]) == (go_status, go_out["code"]), (ours, go_out)
    # where libcni's message is protocol rather than prose, ours is the same text
    if go_out["msg"].startswith(("required env variables", "incompatible CNI versions",
                                 "config version does not allow", "unknown CNI_COMMAND")):
        assert ours["msg"] == go_out["msg"]


def test_version_answer_has_the_same_shape() -> None:
    proc = subprocess.run([GO_LOOPBACK], input=b"", capture_output=True, timeout=30,
                          env={"CNI_COMMAND": "VERSION"}, check=True)
    go = json.loads(proc.stdout)
    status, raw = run_plugin_bytes(NeverCalled(), {"CNI_COMMAND": "VERSION"}, b"")
    ours = json.loads(raw)
    assert status == 0
    assert set(ours) == set(go) == {"cniVersion", "supportedVersions"}
    assert ours["supportedVersions"] == go["supportedVersions"]
