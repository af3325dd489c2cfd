#!/usr/bin/env bash
# The base image every service image builds FROM (python:3.11-slim-bookworm).
# Pulled when a registry answers; otherwise built here from Debian packages
# (debootstrap), the same Python 3.11 on Debian 12 that the official image
# carries, under the official name so the Dockerfiles need no change.
#
# The machine's extra CA certificates (/usr/local/share/ca-certificates) go into
# the image: where package downloads pass through a TLS-inspecting proxy, pip in
# the build stages must trust it. An image built on the official base trusts
# only Debian's CAs.
set -euo pipefail

IMAGE=${1:-python:3.11-slim-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE: present"
  exit 0
fi
if timeout "${SCHIZODOT_PULL_TIMEOUT:-60}" docker pull -q "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE: pulled"
  exit 0
fi

echo "base image $IMAGE: no registry answers; building it from Debian packages (debootstrap, 3-5 minutes)"
[ "$(id -u)" = 0 ] || { echo "building the base image needs root (debootstrap, chroot)" >&2; exit 1; }
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

ROOTFS=$(mktemp -d /var/tmp/schizodot-base.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
start=$(date +%s)
debootstrap --variant=minbase \
  --include=ca-certificates,netbase,tzdata,python3.11,python3.11-venv,python3-pip \
  bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log" >&2; exit 1; }
rm -f "$ROOTFS.log"

# Security updates, as the official image has them.
cat >"$ROOTFS/etc/apt/sources.list" <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
SOURCES
chroot "$ROOTFS" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c \
  'apt-get update -qq && apt-get upgrade -y -qq && apt-get clean && rm -rf /var/lib/apt/lists/*' >/dev/null 2>&1

shopt -s nullglob
extra=(/usr/local/share/ca-certificates/*.crt)
if [ ${#extra[@]} -gt 0 ]; then
  cp "${extra[@]}" "$ROOTFS/usr/local/share/ca-certificates/"
  chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1
fi

# Where the official image has them; pip may install into venvs only there,
# so the marker that forbids system-wide installs goes.
ln -sf /usr/bin/python3.11 "$ROOTFS/usr/local/bin/python"
ln -sf /usr/bin/python3.11 "$ROOTFS/usr/local/bin/python3"
ln -sf /usr/bin/pip3 "$ROOTFS/usr/local/bin/pip"
rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
# Debian's copyright files stay: they go wherever the packages go.
rm -rf "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
find "$ROOTFS"/usr/share/doc -type f ! -name copyright -delete

tar -C "$ROOTFS" -c . | docker import \
  -c 'ENV LANG=C.UTF-8' \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'CMD ["python3"]' - "$IMAGE" >/dev/null
echo "base image $IMAGE: built from Debian packages in $(( $(date +%s) - start )) s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
