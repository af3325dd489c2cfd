#!/usr/bin/env bash
# Builds the service images from deploy/docker/service.Dockerfile:
# deploy/docker/images.sh [service ...] (default: all five, CPU). `vision-cuda`
# builds the vision image's cuda target for GPU nodes.
# Tags: schizodot-<service>:$SCHIZODOT_IMAGE_TAG (default dev), vision-cuda as
# schizodot-vision:<tag>-cuda. Prints each build's time.
# SCHIZODOT_PRUNE_BUILD_STAGES=1 prunes the dangling build stages after each image.
set -euo pipefail
cd "$(dirname "$0")/../.."

TAG=${SCHIZODOT_IMAGE_TAG:-dev}
services=("$@")
[ ${#services[@]} -gt 0 ] || services=(ingest fusion results audio vision)

bash deploy/docker/engine.sh
bash deploy/docker/base-image.sh python:3.11-slim-bookworm

# The classic builder: it needs no buildx plugin and uses the local base image as
# it is. It builds every stage before --target, so the Dockerfile puts its
# runtime stage before any other variant.
export DOCKER_BUILDKIT=0
summary=()
for service in "${services[@]}"; do
  case "$service" in
    vision-cuda) name=vision target=cuda image=schizodot-vision:$TAG-cuda ;;
    ingest|audio|vision|fusion|results) name=$service target=runtime image=schizodot-$service:$TAG ;;
    *) echo "unknown image '$service' (ingest audio vision fusion results vision-cuda)" >&2; exit 2 ;;
  esac
  start=$(date +%s)
  log=$(mktemp)
  if ! docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE="$name" \
      --target "$target" -t "$image" --build-arg MODELS="${SCHIZODOT_MODELS:-bake}" . >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "image $image: build failed" >&2
    exit 1
  fi
  rm -f "$log"
  # Short of disk (CI sets this): drop the stages the image was built from; the
  # next build redoes its own (no cache shared between services is lost: each
  # service's venv stage differs anyway).
  if [ "${SCHIZODOT_PRUNE_BUILD_STAGES:-0}" = 1 ]; then docker image prune -f >/dev/null; fi
  seconds=$(( $(date +%s) - start ))
  size=$(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.2f GB", $1/1e9}')
  summary+=("$(printf '%-28s %6s s  %s' "$image" "$seconds" "$size")")
  echo "image $image: built in $seconds s, $size"
done
printf '%s\n' "built:" "${summary[@]}"
