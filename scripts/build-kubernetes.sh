#!/usr/bin/env bash
# Build kube-apiserver and kubectl v1.20.2 from Debian's source package, offline, into a cache
# outside the checkout: ${PYCNI_CACHE:-/var/cache/pycni}/kubernetes-v1.20.2/{bin,src,gocache}.
# The cluster tests run against this real API server (see README, "Real datastores in tests").
# Does nothing when bin/kube-apiserver already reports v1.20.2. Run as root the first time: it
# installs its apt build dependencies (nothing under /etc/apt changes).
set -euo pipefail

K8S_VERSION=v1.20.2
K8S_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56
# Upstream's own build date for v1.20.2, so repeated builds are identical.
K8S_BUILD_DATE=2021-01-13T13:20:00Z
DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
ORIG_SHA256=b83c0780efb182d928dc63d46488a847f161f04e40a94b96bf5247dd671ecdfc
BUILD_DEPS=(golang-go golang-github-modern-go-reflect2-dev ca-certificates openssl)
BINARIES=(kube-apiserver kubectl)

CACHE="${PYCNI_CACHE:-/var/cache/pycni}/kubernetes-${K8S_VERSION}"
BIN="$CACHE/bin"

log() { printf 'build-kubernetes: %s\n' "$*" >&2; }

have_binaries() {
  local b
  for b in "${BINARIES[@]}"; do
    [[ -x "$BIN/$b" ]] || return 1
  done
  "$BIN/kube-apiserver" --version 2>/dev/null | grep -qx "Kubernetes ${K8S_VERSION}" || return 1
  "$BIN/kubectl" version --client --short 2>/dev/null | grep -q "${K8S_VERSION}"
}

if have_binaries; then
  exit 0
fi

mkdir -p "$CACHE"
# One build at a time per cache (two test sessions may ask at once); the second one finds the
# binaries the first one made.
exec 9>"$CACHE/.lock"
flock 9
if have_binaries; then
  exit 0
fi
started=$SECONDS

missing=()
for pkg in "${BUILD_DEPS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

SRC="$CACHE/src"
if [[ ! -f "$SRC/.pycni-unpacked" ]]; then
  # apt fetches the source package through private lists: a deb-src copy of the machine's own
  # deb822 sources, so the archive (and its keyring) is the one the machine already trusts.
  APT="$CACHE/apt"
  rm -rf "$APT"
  mkdir -p "$APT/sources" "$APT/lists/partial" "$APT/download"
  # apt downloads as its sandbox user when it can write there
  if ((EUID == 0)) && id _apt >/dev/null 2>&1; then
    chown _apt "$APT/lists/partial" "$APT/download"
  fi
  shopt -s nullglob
  for f in /etc/apt/sources.list.d/*.sources; do
    sed -E 's/^Types:.*/Types: deb-src/' "$f" >"$APT/sources/$(basename "$f")"
  done
  shopt -u nullglob
  apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$APT/sources"
            -o "Dir::State::Lists=$APT/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
  log "fetching Debian source package kubernetes=$DEB_VERSION"
  apt-get "${apt_opts[@]}" update -qq
  (cd "$APT/download" && apt-get "${apt_opts[@]}" source --download-only -qq "kubernetes=$DEB_VERSION")
  orig=$(find "$APT/download" -maxdepth 1 -name 'kubernetes_*.orig.tar.*' | head -n1)
  [[ -n "$orig" ]] || { log "no orig tarball in $APT/download"; exit 1; }
  echo "$ORIG_SHA256  $orig" | sha256sum -c --quiet - || { log "sha256 mismatch: $orig"; exit 1; }

  rm -rf "$SRC"
  mkdir -p "$SRC"
  tar -xf "$orig" -C "$SRC" --strip-components=1
  # Go 1.18+ changed the runtime internals that the vendored reflect2 1.0.1 reaches into
  # (the build fails, or maps crash at run time); Debian's 1.0.2 works with 1.19.
  reflect2=$SRC/vendor/github.com/modern-go/reflect2
  rm -f "$reflect2"/*.go "$reflect2"/*.s
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$reflect2"/
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$reflect2"/ 2>/dev/null || true
  rm -rf "$APT"
  touch "$SRC/.pycni-unpacked"
fi

# 1.20 builds in GOPATH mode: its staging repositories are reached through vendor/ symlinks
# and have no go.mod of their own, so -mod=vendor cannot build them.
GOPATH_DIR="$CACHE/gopath"
PKG_DIR="$GOPATH_DIR/src/k8s.io/kubernetes"
mkdir -p "$(dirname "$PKG_DIR")"
ln -sfn "$SRC" "$PKG_DIR"
export GOPATH="$GOPATH_DIR" GOCACHE="$CACHE/gocache" GO111MODULE=off GOPROXY=off \
  GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=
cd "$PKG_DIR"

OPENAPI=pkg/generated/openapi/zz_generated.openapi.go
if [[ ! -f "$OPENAPI" ]]; then
  log "generating $OPENAPI"
  tools="$CACHE/tools"
  mkdir -p "$tools"
  go build -o "$tools/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  # The packages Makefile.generated_files hands openapi-gen for pkg/generated/openapi: the
  # directories of Go files that carry a `// +k8s:` tag and `+k8s:openapi-gen=`, found as
  # hack/make-rules/helpers/cache_go_dirs.sh walks the tree (top-level _*, .* and vendor/
  # skipped, staging/src seen as vendor/), without code-generator and sample-apiserver.
  # (grep exits 1 for a batch of files without the tag; that is not an error here)
  tagged=(sh -c 'grep -l -e "^// *+k8s:" "$@" | xargs -r grep -l -e "+k8s:openapi-gen=" || true' sh)
  inputs=$(
    find -H . \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \
        -o -type f -name '*.go' -print0 \
      | xargs -0 "${tagged[@]}" \
      | sed 's|^\./||; s|^staging/src/|vendor/|' \
      | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' \
      | xargs -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -
  )
  report="$CACHE/tools/api-rules.report"
  "$tools/openapi-gen" --logtostderr -v 0 -i "$inputs" \
    -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    --report-filename "$report"
  # The API-rule report matching upstream's exception list is the check that the generated
  # file covers exactly the packages upstream's Makefile selects.
  if ! diff -q <(LC_ALL=C sort "$report") <(LC_ALL=C sort api/api-rules/violation_exceptions.list) \
      >/dev/null; then
    log "openapi-gen's API-rule report differs from api/api-rules/violation_exceptions.list"
    rm -f "$OPENAPI"
    exit 1
  fi
fi

ldflags="-s -w"
for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version \
           k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=20"
  ldflags+=" -X $pkg.gitCommit=${K8S_COMMIT} -X $pkg.gitTreeState=archive"
  ldflags+=" -X $pkg.buildDate=${K8S_BUILD_DATE}"
done
mkdir -p "$BIN"
for b in "${BINARIES[@]}"; do
  log "building $b"
  go build -trimpath -ldflags "$ldflags" -o "$BIN/.$b.tmp" "./cmd/$b"
  mv -f "$BIN/.$b.tmp" "$BIN/$b"
done
have_binaries || { log "built binaries do not report ${K8S_VERSION}"; exit 1; }
log "done in $((SECONDS - started)) s: $BIN"
