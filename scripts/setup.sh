#!/usr/bin/env bash
# Install what pycni needs on a Debian machine (run as root): kernel tools, the Go reference
# plugins (our test oracle), etcd and a kube-apiserver built from Debian's source package (the
# cluster tests' real datastores), and a virtualenv in .venv with pycni and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  iproute2 util-linux procps nftables iptables conntrack iputils-ping tcpdump iperf3
  dnsmasq-base busybox-static containernetworking-plugins python3-venv python3-pip
  podman runc containerd etcd-server etcd-client graphviz chromium
  openssl  # the test API server's certificates (KubeAPIServer), also when kubernetes is cached
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's interpreter, not whatever `python3` is first on PATH (a pyenv or conda build may
# lack venv, or be removed later and leave the venv pointing nowhere). python3-venv above
# gives it the venv module.
PYTHON=/usr/bin/python3
if ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
  rm -rf .venv
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test,cluster]'

# kube-apiserver/kubectl v1.20.2 for the cluster tests, cached outside the checkout
# (${PYCNI_CACHE:-/var/cache/pycni}); a no-op once built, about 4 minutes the first time.
bash scripts/build-kubernetes.sh
