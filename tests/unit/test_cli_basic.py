"""The pycni command without namespaces: version, errors, list, install."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pycni.cli import app
from pycni.cli._app import _container_id
from pycni.daemon import install_plugins, interpreter, shim_script
from pycni.invoke import PYCNI_MARKER, REGISTRY
from pycni.spec import SUPPORTED_VERSIONS

runner = CliRunner()


def test_version_json() -> None:
    out = runner.invoke(app, ["version", "--json"])
    assert out.exit_code == 0
    assert json.loads(out.stdout)["supportedVersions"] == list(SUPPORTED_VERSIONS)


def test_unknown_network_is_one_line_on_stderr(tmp_path: Path) -> None:
    out = runner.invoke(app, ["add", "nonet", "/run/netns/x", "--conf-dir", str(tmp_path),
                              "--cache-dir", str(tmp_path / "cache")])
    assert out.exit_code == 1
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("pycni: no net configuration with name \"nonet\"")


def test_json_errors_print_the_cni_error_object(tmp_path: Path) -> None:
    out = runner.invoke(app, ["check", "nonet", "/x", "--json", "--conf-dir", str(tmp_path)])
    assert out.exit_code == 1
    assert json.loads(out.stdout)["code"] == 7


@pytest.mark.parametrize(("env", "code"), [
    ({"CAP_ARGS": "{bad"}, 6), ({"CAP_ARGS": "[1]"}, 4), ({"CNI_ARGS": "novalue"}, 4),
])
def test_bad_environment(tmp_path: Path, env: dict[str, str], code: int) -> None:
    (tmp_path / "10.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge"}]}))
    out = runner.invoke(app, ["add", "n", "/x", "--json", "--conf-dir", str(tmp_path),
                              "--cni-path", str(tmp_path)], env=env)
    assert out.exit_code == 1
    assert json.loads(out.stdout)["code"] == code


def test_container_id_matches_cnitool() -> None:
    expected = "cnitool-" + hashlib.sha512(b"/run/netns/a").digest()[:10].hex()
    assert _container_id("/run/netns/a") == expected


def test_list_marks_the_default_and_skipped_files(tmp_path: Path) -> None:
    (tmp_path / "20-b.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "bridge"}]}))
    (tmp_path / "10-a.conf").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "a", "type": "ptp"}))
    (tmp_path / "00-bad.conf").write_text("{")
    out = runner.invoke(app, ["list", "--json", "--conf-dir", str(tmp_path)])
    assert out.exit_code == 0
    listed = json.loads(out.stdout)
    assert [n["name"] for n in listed["networks"]] == ["a", "b"]
    assert listed["skipped"][0]["file"].endswith("00-bad.conf")
    text = runner.invoke(app, ["list", "--conf-dir", str(tmp_path)])
    assert text.stdout.splitlines()[0].startswith("a (default)")


def test_install_writes_one_executable_per_type(tmp_path: Path) -> None:
    out = runner.invoke(app, ["install", "--bin-dir", str(tmp_path)])
    assert out.exit_code == 0, out.stderr
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(REGISTRY)
    python = interpreter()
    assert "shims" not in python
    assert Path(python).is_absolute()
    for name in written:
        path = tmp_path / name
        assert path.stat().st_mode & stat.S_IXUSR
        lines = path.read_text().splitlines()
        assert lines[0] == f"#!{python} -IS"
        assert lines[1] == f"{PYCNI_MARKER.decode()} {name}"
        assert f"main({name!r}, " in lines[-1]


def test_install_leaves_foreign_executables_alone(tmp_path: Path) -> None:
    foreign = tmp_path / "loopback"
    foreign.write_text("#!/bin/sh\necho go\n")
    out = runner.invoke(app, ["install", "--bin-dir", str(tmp_path)])
    assert out.exit_code == 0
    assert foreign.read_text() == "#!/bin/sh\necho go\n"
    assert "loopback" in out.stderr
    forced = runner.invoke(app, ["install", "--bin-dir", str(tmp_path), "--force"])
    assert forced.exit_code == 0
    assert PYCNI_MARKER.decode() in foreign.read_text()


def test_installed_plugin_answers_version(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "loopback").write_text(shim_script("loopback", interpreter()))
    (tmp_path / "loopback").chmod(0o755)
    env = {**os.environ, "CNI_COMMAND": "VERSION"}
    proc = subprocess.run([str(tmp_path / "loopback")], input=b"{}", capture_output=True,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "1.1.0" in json.loads(proc.stdout)["supportedVersions"]


def test_interpreter_is_the_running_python() -> None:
    assert Path(interpreter()).resolve() == Path(sys.executable).resolve()


def test_install_names_a_directory_it_cannot_create(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    bin_dir = tmp_path / "file" / "bin"
    out = runner.invoke(app, ["install", "--bin-dir", str(bin_dir)])
    assert out.exit_code == 1
    assert out.stderr == f"pycni: cannot create {bin_dir}: Not a directory\n"
    unit_dir = tmp_path / "file" / "units"
    out = runner.invoke(app, ["install", "--agent", "--bin-dir", str(tmp_path / "bin"),
                              "--unit-dir", str(unit_dir)])
    assert out.exit_code == 1
    assert out.stderr == f"pycni: cannot create {unit_dir}: Not a directory\n"


def test_install_plugins_asks_before_replacing_and_reports_each_file(tmp_path: Path) -> None:
    (tmp_path / "bridge").write_text("#!/bin/sh\n")
    written: list[Path] = []
    asked: list[Path] = []

    def replace(path: Path) -> bool:
        asked.append(path)
        return False

    skipped = install_plugins(tmp_path, replace=replace, written=written.append,
                              python="/usr/bin/python3")
    assert skipped == ["bridge"]
    assert asked == [tmp_path / "bridge"]
    assert written == [tmp_path / t for t in sorted(REGISTRY) if t != "bridge"]
    assert (tmp_path / "loopback").read_text().startswith("#!/usr/bin/python3 -IS\n")
