"""pycni.invoke: finding a plugin, in-process or exec, and what the layer imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import pycni
from pycni.invoke import (
    IN_PROCESS_PREFIX,
    PYCNI_MARKER,
    REGISTRY,
    exec_plugin,
    is_pycni_executable,
    locate_plugin,
    run_in_process,
    run_located,
)
from pycni.skel import CmdArgs, Plugin
from pycni.spec import AddressExhausted, PluginExecFailed, PluginNotFound, Result

STDIN = json.dumps({"cniVersion": "1.1.0", "name": "pytnet", "type": "pyt-inv"}).encode()
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "pyt-1", "CNI_NETNS": "/run/netns/pyt",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/nowhere"}


class Exhausted(Plugin):
    """Always out of addresses."""

    type_name = "pyt-inv"

    def add(self, args: CmdArgs) -> Result:
        raise AddressExhausted(f"no address for {args.container_id}")

    def delete(self, args: CmdArgs) -> None:  # noqa: ARG002 - holds nothing
        return


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(REGISTRY, "pyt-inv", f"{__name__}:Exhausted")
    return "pyt-inv"


def _script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_a_type_missing_from_the_path(registered: str, tmp_path: Path) -> None:
    paths = [str(tmp_path)]
    assert locate_plugin(registered, paths) == IN_PROCESS_PREFIX + registered
    assert locate_plugin(registered, paths, in_process="prefer") == IN_PROCESS_PREFIX + registered
    with pytest.raises(PluginNotFound, match="pyt-inv"):
        locate_plugin(registered, paths, in_process="never")
    with pytest.raises(PluginNotFound, match="pyt-unknown"):
        locate_plugin("pyt-unknown", paths, in_process="prefer")


def test_an_installed_pycni_executable(registered: str, tmp_path: Path) -> None:
    exe = _script(tmp_path, registered, f"{PYCNI_MARKER.decode()} {registered}\nexit 99")
    assert is_pycni_executable(exe)
    paths = [str(tmp_path)]
    assert locate_plugin(registered, paths) == str(exe)
    assert locate_plugin(registered, paths, in_process="never") == str(exe)
    assert locate_plugin(registered, paths, in_process="prefer") == IN_PROCESS_PREFIX + registered


def test_a_foreign_executable_is_always_exec(registered: str, tmp_path: Path) -> None:
    exe = _script(tmp_path, registered, "exit 0")
    assert not is_pycni_executable(exe)
    assert not is_pycni_executable(tmp_path / "missing")
    assert locate_plugin(registered, [str(tmp_path)], in_process="prefer") == str(exe)


@pytest.mark.parametrize("name", ["", ".", "..", "../pyt-inv", "a/b", "a\x00b"])
def test_names_that_are_not_a_file_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(PluginNotFound):
        locate_plugin(name, [str(tmp_path)])


def test_in_process_error_keeps_its_class(registered: str) -> None:
    status, out = run_in_process(registered, ENV, STDIN)
    assert status == 1
    assert json.loads(out)["code"] == AddressExhausted("").code
    with pytest.raises(AddressExhausted, match="no address for pyt-1"):
        run_located(IN_PROCESS_PREFIX + registered, ENV, STDIN)
    with pytest.raises(PluginNotFound, match="pyt-unknown"):
        run_in_process("pyt-unknown", ENV, STDIN)


def test_exec_retries_a_busy_executable(tmp_path: Path) -> None:
    # The kernel refuses to exec a file open for writing (ETXTBSY): what a runtime meets
    # while a plugin binary is being replaced. The writer finishes shortly after.
    exe = tmp_path / "pyt-busy"
    writer = exe.open("w")
    writer.write('#!/bin/sh\necho \'{"cniVersion": "1.1.0"}\'\n')
    writer.flush()
    exe.chmod(0o755)
    closer = threading.Timer(0.05, writer.close)
    closer.start()
    try:
        assert json.loads(exec_plugin(str(exe), ENV, b"")) == {"cniVersion": "1.1.0"}
    finally:
        closer.cancel()
        writer.close()


def test_exec_timeout_is_plugin_exec_failed(tmp_path: Path) -> None:
    exe = _script(tmp_path, "pyt-slow", "exec sleep 30")
    with pytest.raises(PluginExecFailed, match="timed out"):
        exec_plugin(str(exe), ENV, b"", timeout=0.2)


def _fresh_interpreter(code: str) -> list[str]:
    """Module names a ``-I -S`` interpreter has after ``code`` (as the shim runs)."""
    src = str(Path(pycni.__file__).parent.parent)
    probe = (f"import sys; sys.path.insert(0, {src!r}); {code}; "
             "print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True,
                         text=True, check=True, env={**os.environ, "LC_ALL": "C.UTF-8"})
    return out.stdout.split()


def test_the_layer_imports_nothing_above_it() -> None:
    loaded = _fresh_interpreter("import pycni.invoke as i; [getattr(i, n) for n in i.__all__]")
    above = [m for m in loaded if m.split(".")[:2] in (["pycni", "skel"], ["pycni", "plugins"],
                                                       ["pycni", "runtime"])]
    assert not above


def test_the_shims_standalone_path_stays_cheap() -> None:
    # What pycni.shim.run_standalone takes from invoke before the plugin itself: the
    # registry module, and no Python-level stdlib module beyond importlib's.
    before = set(_fresh_interpreter("pass"))
    loaded = _fresh_interpreter("from pycni.invoke import REGISTRY, plugin_main, run_in_process")
    new = sorted(set(loaded) - before)
    assert [m for m in new if m.startswith("pycni")] == ["pycni", "pycni._lazy", "pycni.invoke",
                                                        "pycni.invoke._inprocess"]
    assert not {"typing", "subprocess", "logging", "pycni.spec"} & set(new)
