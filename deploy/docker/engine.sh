#!/usr/bin/env bash
# A Docker engine for `make images` / `make check-images` on a fresh machine:
# installs Debian's docker.io when there is no dockerd, and starts one when no
# engine answers (under systemd when it runs, otherwise in the background with
# its data under $SCHIZODOT_DOCKER_DATA_ROOT, default /var/lib/docker).
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

if ! command -v dockerd >/dev/null; then
  echo "docker engine: installing Debian's docker.io"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi
if docker info >/dev/null 2>&1; then
  exit 0
fi

if [ -d /run/systemd/system ]; then
  $SUDO systemctl start docker
else
  data_root=${SCHIZODOT_DOCKER_DATA_ROOT:-/var/lib/docker}
  log=${SCHIZODOT_DOCKERD_LOG:-/var/log/schizodot-dockerd.log}
  echo "docker engine: starting dockerd (data in $data_root, log in $log)"
  $SUDO mkdir -p "$data_root"
  $SUDO sh -c "nohup dockerd --data-root '$data_root' >'$log' 2>&1 &"
fi
for _ in $(seq 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "docker engine: dockerd did not answer within 60 s" >&2
exit 1
