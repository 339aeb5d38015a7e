"""Running a plugin executable, as libcni's invoke package does (RawExec)."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Mapping

from ..spec import CNIError, PluginExecFailed, decode_json

# subprocess and logging load on the first exec: a standalone plugin imports this module
# (with pycni.invoke) but most calls exec nothing, and the two cost it ~7 ms of start-up.

#: Default exec timeout; a runtime can pass its own.
DEFAULT_TIMEOUT = 60.0
#: "text file busy" (ETXTBSY) happens when a plugin binary is being replaced while we exec it;
#: libcni retries a few times, so do we.
_ETXTBSY_RETRIES = 5


def exec_plugin(
    path: str,
    env: Mapping[str, str],
    stdin: bytes,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    inherit_env: bool = True,
) -> bytes:
    """Run plugin ``path``; return its stdout, or raise the CNIError it printed.

    The CNI_* variables in ``env`` override the inherited environment, as in libcni.
    """
    import subprocess

    full_env = dict(os.environ) if inherit_env else {}
    full_env.update(env)
    for attempt in range(_ETXTBSY_RETRIES + 1):
        try:
            proc = subprocess.run(
                [path],
                input=stdin,
                env=full_env,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
            break
        except OSError as exc:
            if exc.errno == errno.ETXTBSY and attempt < _ETXTBSY_RETRIES:
                time.sleep(0.05 * (attempt + 1))
                continue
            raise PluginExecFailed(f"failed to execute plugin {path}", str(exc)) from exc
        except subprocess.TimeoutExpired as exc:
            raise PluginExecFailed(
                f"plugin {path} timed out", f"no answer to {env.get('CNI_COMMAND')} in {timeout}s"
            ) from exc
    if proc.returncode != 0:
        raise _error_from_output(path, proc.stdout, proc.stderr, proc.returncode)
    if proc.stderr:
        # libcni passes plugin stderr through to the runtime's; we keep it for -v.
        import logging

        logging.getLogger("pycni.invoke").debug("%s %s stderr: %s", path, env.get("CNI_COMMAND"),
                  proc.stderr.decode(errors="replace").strip()[-2000:])
    return proc.stdout


def _error_from_output(path: str, stdout: bytes, stderr: bytes, status: int) -> CNIError:
    try:
        return CNIError.from_json(decode_json(stdout, f"error from plugin {path}"))
    except (ValueError, CNIError):
        tail = (stderr or stdout).decode(errors="replace").strip()[-500:]
        return PluginExecFailed(f"plugin {path} failed with exit status {status}", tail)
