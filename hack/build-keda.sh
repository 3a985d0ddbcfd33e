#!/usr/bin/env bash
# Builds the pinned KEDA release (its operator and its metrics API server) into .local/bin, for
# the scale race only (make bench-scale): make test does not need it. Each binary is built inside
# KEDA's downloaded module by hack/build-module.sh under its own stamp; a second run does nothing.
# Cold, about 11 minutes on 2 idle cores, downloads included.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"${root}/hack/build-module.sh" keda-operator github.com/kedacore/keda/v2 v2.21.0 ./cmd/operator "$@"
"${root}/hack/build-module.sh" keda-adapter github.com/kedacore/keda/v2 v2.21.0 ./cmd/adapter "$@"
