#!/usr/bin/env bash
# Builds the pinned controller-gen (hack/tools/controller-gen) into .local/bin. It has its own
# stamp, a hash of its pin files and the Go version, so that changing it never rebuilds the
# local cluster's components, and a second run with the same pin does nothing.
#
# Usage: hack/build-controller-gen.sh    (prints the binary's path)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${root}"

go="${GO:-go}"
out=".local/bin"
bin="${out}/controller-gen"
stamp_file="${out}/.controller-gen-stamp"

stamp="$(
	{
		cat hack/tools/controller-gen/go.mod hack/tools/controller-gen/go.sum
		"${go}" version
	} | sha256sum | cut -d' ' -f1
)"
if [[ -x "${bin}" && -f "${stamp_file}" && "$(cat "${stamp_file}")" == "${stamp}" ]]; then
	echo "${bin}"
	exit 0
fi

mkdir -p "${out}"
rm -f "${stamp_file}"
(cd hack/tools/controller-gen && CGO_ENABLED=0 "${go}" build -trimpath -buildvcs=false -o "${root}/${bin}.tmp" \
	sigs.k8s.io/controller-tools/cmd/controller-gen) >&2
mv -f "${bin}.tmp" "${bin}"
echo "${stamp}" >"${stamp_file}"
echo "${bin}"
