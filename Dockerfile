# wxgate's image: `make image` (docker build -t wxgate:$(VERSION) .).
# deploy/deploytest checks this file with buildkit's own Dockerfile parser.

# The build: a static binary (no cgo), paths trimmed, version and commit
# stamped into `wxgate version`.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
RUN go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/wxgate ./cmd/wxgate

# The runtime: distroless static (CA certificates, tzdata, /etc/passwd, no
# shell), as the nonroot user 65532. The shipped gateway.toml is only an
# example: mount the real one at /etc/wxgate/gateway.toml (Kubernetes: the
# ConfigMap in deploy/kubernetes).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/wxgate /wxgate
COPY gateway.toml /etc/wxgate/gateway.toml.example
USER 65532:65532
# 8080: the public listener; 9090: the admin listener (/healthz, /readyz,
# /metrics), which the config must bind beyond loopback for probes.
EXPOSE 8080 9090
# The command is CMD, not part of ENTRYPOINT: arguments (docker run IMAGE
# check --config ..., Kubernetes args) replace it rather than being
# appended after it, which wxgate refuses.
ENTRYPOINT ["/wxgate"]
CMD ["serve", "--config", "/etc/wxgate/gateway.toml"]
