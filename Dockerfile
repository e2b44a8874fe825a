# syntax=docker/dockerfile:1
# One image for every role: the command picks it (web, api, worker, beat, dev, or
# an admin command such as "migrate up" or "streams apply").
#
#   docker build -t flotilla --build-arg VERSION=$(git describe --tags --always) .
#   docker run --rm flotilla version

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# go.mod may ask for a newer patch release than the image has: let the go
# command fetch that toolchain instead of failing (the image sets GOTOOLCHAIN=local).
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=auto
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath \
      -ldflags "-s -w -X github.com/flotilla/flotilla/internal/cli.Version=${VERSION}" \
      -o /out/flotilla ./cmd/flotilla

# Alpine rather than distroless: the HEALTHCHECK below needs a shell to pick
# the role from $FLOTILLA_HEALTH_ROLE, and a shell helps when debugging.
FROM alpine:3.22
RUN apk add --no-cache ca-certificates tzdata \
    && adduser -D -H -u 10001 -h /var/lib/flotilla flotilla \
    && mkdir -p /var/lib/flotilla && chown flotilla:flotilla /var/lib/flotilla
COPY --from=build /out/flotilla /usr/local/bin/flotilla
USER flotilla
# data_dir (./var) of the dev role lives here.
WORKDIR /var/lib/flotilla
# 8080 web, 8081 api; health and metrics of the worker on 8082, of beat on 8083.
EXPOSE 8080 8081 8082 8083
# FLOTILLA_HEALTH_ROLE is read by this health check only (it is not a config
# key); docker-compose.yml overrides the check per service anyway.
ENV FLOTILLA_HEALTH_ROLE=web
HEALTHCHECK --interval=15s --timeout=6s --start-period=20s --retries=3 \
    CMD flotilla health --role "$FLOTILLA_HEALTH_ROLE" || exit 1
ENTRYPOINT ["flotilla"]
CMD ["web"]
