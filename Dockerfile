# syntax=docker/dockerfile:1
# One image recipe for both product binaries; BINARY selects which (adapter or echo):
#
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg BINARY=adapter \
#     --build-arg VERSION=v0.1.0 -t ghcr.io/OWNER/wsscale/adapter:v0.1.0 .
#
# The binary is built by `make build-binary`, with the same flags as `make build` (defined once in
# the Makefile): static (CGO_ENABLED=0), -trimpath, version and commit through -ldflags.

# The Go toolchain of go.mod, pinned by version tag. Pin a digest too in production.
ARG GO_IMAGE=golang:1.26.8-bookworm
# A static, non-root distroless base (uid 65532), pinned by its Debian release. Pin a digest too in production.
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
ARG TARGETOS
ARG TARGETARCH
ARG BINARY=adapter
ARG VERSION=dev
ARG COMMIT=
WORKDIR /src
# Modules first, so that a source change reuses the download layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} make build-binary BINARY=${BINARY} VERSION=${VERSION} COMMIT=${COMMIT} BIN=/out \
    && mv /out/${BINARY} /out/entrypoint

FROM ${BASE_IMAGE}
ARG BINARY=adapter
ARG VERSION=dev
LABEL org.opencontainers.image.title="wsscale-${BINARY}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/wsscale/wsscale"
COPY --from=build /out/entrypoint /usr/local/bin/wsscale
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/wsscale"]
