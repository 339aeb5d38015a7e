"""bandwidth's config reading and tc arithmetic, without a kernel."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pycni.host import _tc as tc
from pycni.plugins.meta.bandwidth import BandwidthConfig
from pycni.skel import CmdArgs
from pycni.spec import InvalidNetworkConfig, NetworkConfig

KUBELET_UNLIMITED = 2**31 - 1  # math.MaxInt32: kubelet/containerd's "no burst limit"


def args(conf: dict[str, Any]) -> CmdArgs:
    raw = json.dumps({"cniVersion": "1.0.0", "name": "pytnet", "type": "bandwidth",
                      **conf}).encode()
    return CmdArgs(command="ADD", container_id="c1", netns="/run/netns/pyt-none",
                   ifname="eth0", args="", path=(), stdin=raw, conf=NetworkConfig.parse(raw))


@pytest.mark.parametrize("rate", [8, 1_000, 1_000_000, 10**9, 2**40, 8 * 2**64 - 1])
def test_buckets_fit_the_kernels_32_bit_fields(rate: int) -> None:
    shaping = tc.Shaping(rate, KUBELET_UNLIMITED)
    assert 0 <= tc.buffer_ticks(shaping.rate_bytes, shaping.burst_bytes) <= 2**32 - 1
    assert 0 < tc.queue_limit(shaping.rate_bytes, shaping.burst_bytes) <= 2**32 - 1


def test_small_buckets_are_the_reference_arithmetic() -> None:
    # 16 Mbit/s with 256 kbit: 16 ms of traffic; psched ticks are 1/15.625 us or 1 us.
    ticks = tc.buffer_ticks(2_000_000, 32_000)
    assert ticks in (16_000, 250_000)
    assert tc.queue_limit(2_000_000, 32_000) == 50_000 + 32_000


@pytest.mark.parametrize(("where", "limits", "field"), [
    ("top", {"ingressRate": 8 * 2**64, "ingressBurst": 800}, '"ingressRate"'),
    ("top", {"egressRate": 10**30, "egressBurst": 800}, '"egressRate"'),
    ("top", {"ingressRate": 7, "ingressBurst": 800}, '"ingressRate"'),
    ("top", {"egressRate": 8000, "egressBurst": 8 * (2**32 - 1)}, '"egressBurst"'),
    ("top", {"ingressRate": 8000, "ingressBurst": 10**30}, '"ingressBurst"'),
    ("rc", {"ingressRate": 10**30, "ingressBurst": KUBELET_UNLIMITED},
     '"runtimeConfig.bandwidth.ingressRate"'),
    ("rc", {"egressRate": 8000, "egressBurst": 10**30},
     '"runtimeConfig.bandwidth.egressBurst"'),
])
def test_out_of_range_limits_are_config_errors(where: str, limits: dict[str, int],
                                               field: str) -> None:
    conf = limits if where == "top" else {"runtimeConfig": {"bandwidth": limits}}
    with pytest.raises(InvalidNetworkConfig) as info:
        BandwidthConfig.load(args(conf))
    assert info.value.code == 7
    assert field in str(info.value)


def test_kubelet_unlimited_burst_is_accepted() -> None:
    conf = BandwidthConfig.load(args({"runtimeConfig": {"bandwidth": {
        "ingressRate": 1_000_000, "ingressBurst": KUBELET_UNLIMITED,
        "egressRate": 1_000_000, "egressBurst": KUBELET_UNLIMITED}}}))
    assert conf.ingress is not None
    assert conf.ingress.burst_bits == KUBELET_UNLIMITED
