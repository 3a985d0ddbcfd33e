#!/usr/bin/env bash
# Installs Traefik as the cluster's ingress controller (deploy/traefik): Traefik's CRDs of the pinned
# version (hack/build-tools.sh copies them from the module it builds), the Gateway API standard-channel
# CRDs when they are found ($WSSCALE_CRDS_DIR or ../shared/crds) with the GatewayClass and Gateway,
# and the controller itself; then waits until it serves. Entry points on the host: NodePort 30880
# (web, ws://) and 30443 (websecure, wss://, Traefik's default certificate).
#
# Usage: hack/traefik-up.sh [KUBECONFIG]   (default .local/kubeconfig, the local cluster's)
set -euo pipefail
cd "$(dirname "$0")/.."
kubeconfig=${1:-.local/kubeconfig}
k() { .local/bin/kubectl --kubeconfig "$kubeconfig" "$@"; }

hack/build-tools.sh >/dev/null # Traefik and its CRDs; a no-op when they are current
k apply --server-side --force-conflicts -f .local/bin/traefik-crds.yaml >/dev/null
k wait --for=condition=Established --timeout=60s crd/ingressroutes.traefik.io crd/middlewares.traefik.io crd/serverstransports.traefik.io >/dev/null
crds=${WSSCALE_CRDS_DIR:-../shared/crds}
gateway=0
if [[ -f "${crds}/gateway-api.yaml" ]]; then
	k apply --server-side --force-conflicts -f "${crds}/gateway-api.yaml" >/dev/null
	k wait --for=condition=Established --timeout=60s crd/gateways.gateway.networking.k8s.io crd/httproutes.gateway.networking.k8s.io >/dev/null
	gateway=1
fi
k apply -f deploy/traefik/traefik.yaml
if [[ "${gateway}" == 1 ]]; then
	k apply -f deploy/traefik/gateway.yaml
else
	echo "no Gateway API CRDs in ${crds}: Traefik serves Ingress and IngressRoute; its Gateway provider logs that it finds no Gateway resources"
fi
k -n traefik rollout status deployment/traefik --timeout=180s
