#!/usr/bin/env bash
# Builds the pinned local-cluster components (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, helm) from the modules under hack/tools into .local/bin,
# and CoreDNS (the cluster DNS), Traefik (the ingress controller) and Prometheus through
# hack/build-module.sh.
#
# The build is keyed by a stamp: a hash of the pinning files, the Go version and the
# build flags. A second run with the same pin prints that the tools are up to date and
# does nothing. Only the Go module proxy is contacted, and only for missing modules.
#
# Usage: hack/build-tools.sh [-f]    (-f rebuilds even when the stamp matches)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${root}"

go="${GO:-go}"
out=".local/bin"
stamp_file="${out}/.tools-stamp"
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm)

force=0
if [[ "${1:-}" == "-f" ]]; then
	force=1
fi

k8s_version="v1.37.2"
helm_version="v3.22.0"

# The version variables make the components report their real version: the API server
# and the controllers use it for compatibility decisions, and helm for its
# default Kubernetes version.
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	k8s_ldflags+=" -X ${pkg}.gitVersion=${k8s_version} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=37"
	k8s_ldflags+=" -X ${pkg}.gitTreeState=clean"
done
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${helm_version}"
# -buildvcs=false: the tools are not built from this repository's history, and a
# fresh clone without commits would otherwise fail to stamp VCS information.
build_flags=(-trimpath -buildvcs=false)

pin_files=(
	hack/tools/go.mod hack/tools/go.sum
	hack/tools/etcd/go.mod hack/tools/etcd/go.sum hack/tools/etcd/main.go
	hack/tools/helm/go.mod hack/tools/helm/go.sum
)
stamp="$(
	{
		cat "${pin_files[@]}"
		"${go}" version
		echo "${build_flags[*]} ${k8s_ldflags} ${helm_ldflags} CGO_ENABLED=0"
	} | sha256sum | cut -d' ' -f1
)"

up_to_date=1
if [[ "${force}" == 1 || ! -f "${stamp_file}" || "$(cat "${stamp_file}")" != "${stamp}" ]]; then
	up_to_date=0
fi
for b in "${binaries[@]}"; do
	if [[ ! -x "${out}/${b}" ]]; then
		up_to_date=0
	fi
done
# Components built inside their own downloaded module, each under its own stamp, so that a
# new pin here never rebuilds the control plane.
module_flags=()
if [[ "${force}" == 1 ]]; then
	module_flags=(-f)
fi
"${root}/hack/build-module.sh" coredns github.com/coredns/coredns v1.15.0 . "${module_flags[@]}"
traefik_version="v3.6.12"
EXTRA_LDFLAGS="-X github.com/traefik/traefik/v3/pkg/version.Version=${traefik_version}" \
	"${root}/hack/build-module.sh" traefik github.com/traefik/traefik/v3 "${traefik_version}" ./cmd/traefik "${module_flags[@]}"
# Traefik's CRDs of the same version (the running version's schemas), for deploy/traefik.
traefik_dir="$(GOFLAGS=-mod=mod "${go}" mod download -json "github.com/traefik/traefik/v3@${traefik_version}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
install -m 0644 "${traefik_dir}/docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml" "${out}/traefik-crds.yaml"
"${root}/hack/build-module.sh" prometheus github.com/prometheus/prometheus v0.316.0 ./cmd/prometheus "${module_flags[@]}"

if [[ "${up_to_date}" == 1 ]]; then
	echo "pinned tools in ${out} are up to date (stamp ${stamp:0:12})"
	exit 0
fi

mkdir -p "${out}"
# Build into a staging directory and move into place at the end, so an interrupted
# build never leaves a stamp that claims binaries it did not produce.
staging="$(mktemp -d "${root}/.local/build-tools.XXXXXX")"
trap 'rm -rf "${staging}"' EXIT
rm -f "${stamp_file}"

export CGO_ENABLED=0
start=${SECONDS}
echo "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl ${k8s_version}"
(cd hack/tools && "${go}" build "${build_flags[@]}" -ldflags="${k8s_ldflags}" -o "${staging}/" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler \
	k8s.io/kubernetes/cmd/kubectl)
echo "building etcd"
(cd hack/tools/etcd && "${go}" build "${build_flags[@]}" -ldflags="-s -w" -o "${staging}/etcd" .)
echo "building helm ${helm_version}"
(cd hack/tools/helm && "${go}" build "${build_flags[@]}" -ldflags="${helm_ldflags}" -o "${staging}/" helm.sh/helm/v3/cmd/helm)

for b in "${binaries[@]}"; do
	mv -f "${staging}/${b}" "${out}/${b}"
done
echo "${stamp}" >"${stamp_file}"
echo "pinned tools built into ${out} in $((SECONDS - start))s (stamp ${stamp:0:12})"
