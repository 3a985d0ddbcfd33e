#!/usr/bin/env bash
# Builds one pinned third-party command the way its own project builds it: inside the module
# as downloaded from the Go module proxy, with the module's own go.mod and go.sum, into
# .local/bin/NAME. Used for components whose go.mod cannot be required from another module
# (replace directives, nested workspaces).
#
# The build is keyed by a stamp (module, version, package, flags, Go version) in
# .local/bin/.NAME-stamp: a second run with the same pin does nothing.
#
# Usage: hack/build-module.sh NAME MODULE VERSION PACKAGE [-f]
#   hack/build-module.sh coredns github.com/coredns/coredns v1.15.0 .
# EXTRA_LDFLAGS (optional) is appended to the linker flags, e.g. to set the version a
# command reports; it is part of the stamp.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${root}"
go="${GO:-go}"
out=".local/bin"

name="$1" module="$2" version="$3" pkg="$4" force="${5:-}"
ldflags="-s -w${EXTRA_LDFLAGS:+ ${EXTRA_LDFLAGS}}"
build_flags=(-trimpath -buildvcs=false)
stamp_file="${out}/.${name}-stamp"
stamp="$(echo "${module}@${version} ${pkg} ${build_flags[*]} ${ldflags} CGO_ENABLED=0 $("${go}" version)" | sha256sum | cut -d' ' -f1)"
if [[ "${force}" != "-f" && -x "${out}/${name}" && -f "${stamp_file}" && "$(cat "${stamp_file}")" == "${stamp}" ]]; then
	echo "${name} ${version} in ${out} is up to date"
	exit 0
fi

start=${SECONDS}
echo "building ${name} from ${module}@${version} (the first time downloads its modules and compiles for a few minutes)"
dir="$(GOFLAGS=-mod=mod "${go}" mod download -json "${module}@${version}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
if [[ -z "${dir}" || ! -d "${dir}" ]]; then
	echo "cannot download ${module}@${version} from the Go module proxy" >&2
	exit 1
fi
mkdir -p "${out}"
staging="$(mktemp -d "${root}/.local/build-${name}.XXXXXX")"
trap 'rm -rf "${staging}"' EXIT
rm -f "${stamp_file}"
# GOWORK=off: some modules ship a go.work naming folders the download does not contain.
(cd "${dir}" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod "${go}" build "${build_flags[@]}" -ldflags="${ldflags}" -o "${staging}/${name}" "${pkg}")
mv -f "${staging}/${name}" "${out}/${name}"
echo "${stamp}" >"${stamp_file}"
echo "${name} built into ${out} in $((SECONDS - start))s"
