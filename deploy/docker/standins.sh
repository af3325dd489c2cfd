#!/usr/bin/env bash
# The third-party images docker-compose.yml runs (moto's server, Jaeger): used
# as they are when present or pullable; otherwise a local image of the same
# software is built under the same name, and this says so.
#   MOTO_IMAGE (default motoserver/moto:5.2.5), JAEGER_IMAGE (default jaegertracing/all-in-one:1.62.0)
set -euo pipefail
cd "$(dirname "$0")/../.."
export DOCKER_BUILDKIT=0

MOTO_IMAGE=${MOTO_IMAGE:-motoserver/moto:5.2.5}
JAEGER_IMAGE=${JAEGER_IMAGE:-jaegertracing/all-in-one:1.62.0}

available() {
  docker image inspect "$1" >/dev/null 2>&1 && return 0
  timeout "${SCHIZODOT_PULL_TIMEOUT:-60}" docker pull -q "$1" >/dev/null 2>&1
}

standin() {  # image, what it is, context folder, build args...
  local image=$1 what=$2 context=$3
  shift 3
  local label
  label=$(docker image inspect -f '{{index .Config.Labels "io.schizodot.stand-in"}}' "$image" 2>/dev/null || true)
  if [ -n "$label" ] || ! available "$image"; then
    local start log
    start=$(date +%s)
    log=$(mktemp)
    if ! docker build -t "$image" "$@" "$context" >"$log" 2>&1; then
      tail -30 "$log" >&2
      exit 1
    fi
    rm -f "$log"
    echo "STAND-IN: $image cannot be pulled here; using a local build of $what ($(( $(date +%s) - start )) s)"
  else
    echo "third-party image $image: the published image"
  fi
}

moto_version=${MOTO_IMAGE##*:}
standin "$MOTO_IMAGE" "moto[server]==$moto_version from PyPI" \
  deploy/docker/standins/moto --build-arg MOTO_VERSION="$moto_version"

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp deploy/docker/standins/jaeger/Dockerfile deploy/docker/standins/jaeger/jaeger_standin.py \
   tests/integration/otlp_receiver.py "$context/"
standin "$JAEGER_IMAGE" "an OTLP/HTTP receiver that records the spans and answers Jaeger's query API" "$context"
