"""ADD and DEL latency of bridge + host-local, pycni against the Go plugins.

Usage (as root): ``.venv/bin/python bench/bench_bridge.py [--rounds 20]``

Each round adds and then deletes one container on a bridge network, with ipMasq off and on,
through each implementation's executables. Medians and the pycni/go ratio are printed.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

from _harness import Samples, plugin_dirs, report, run_plugin, temp_netns

from pycni.testing import unique_name


def conf(bridge: str, data_dir: str, ip_masq: bool) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "benchnet",
        "type": "bridge",
        "bridge": bridge,
        "isGateway": True,
        "ipMasq": ip_masq,
        "ipam": {"type": "host-local", "subnet": "10.123.0.0/16", "dataDir": data_dir},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    opts = parser.parse_args()
    rows: dict[str, dict[str, Samples]] = {}
    with plugin_dirs() as dirs:
        for ip_masq in (False, True):
            for impl, bin_dir in dirs.items():
                with temp_netns("h") as host, tempfile.TemporaryDirectory() as data:
                    c = conf(unique_name("br"), data, ip_masq)
                    for i in range(opts.rounds + 1):
                        with temp_netns("c") as ns:
                            cid = f"bench{i}"
                            t_add, _ = run_plugin(host, bin_dir, "bridge", "ADD", c,
                                                  container_id=cid, netns=ns)
                            t_del, _ = run_plugin(host, bin_dir, "bridge", "DEL", c,
                                                  container_id=cid, netns=ns)
                        if i == 0:
                            continue  # the first round creates the bridge: not steady state
                        suffix = " ipMasq" if ip_masq else ""
                        rows.setdefault(f"ADD{suffix}", {"go": Samples(), "pycni": Samples()})
                        rows.setdefault(f"DEL{suffix}", {"go": Samples(), "pycni": Samples()})
                        rows[f"ADD{suffix}"][impl].values.append(t_add)
                        rows[f"DEL{suffix}"][impl].values.append(t_del)
    print(report(f"bridge + host-local, {opts.rounds} rounds, median wall time per call", rows))


if __name__ == "__main__":
    main()
