#!/usr/bin/env bash
# The Debian packages the project's tools come from, installed only for the tools that
# are missing. A machine whose Node.js comes from NodeSource already has npm: Debian's
# npm conflicts with that nodejs ("held broken packages"), so it is never asked for
# when an npm is on PATH.
#   system-packages.sh           install what is missing
#   system-packages.sh --list    print the packages it would install, one a line
set -euo pipefail

# tool -> Debian package (ffprobe comes with ffmpeg; docker-compose 1.29 only validates
# docker-compose.yml offline; chromium drives the browser tests)
TOOLS=(ffmpeg:ffmpeg ffprobe:ffmpeg espeak-ng:espeak-ng chromium:chromium
       npm:npm docker-compose:docker-compose)

packages=()
for entry in "${TOOLS[@]}"; do
    tool=${entry%%:*} package=${entry#*:}
    command -v "$tool" >/dev/null 2>&1 && continue
    [[ " ${packages[*]-} " == *" $package "* ]] || packages+=("$package")
done

if [[ "${1-}" == "--list" ]]; then
    [[ ${#packages[@]} -eq 0 ]] || printf '%s\n' "${packages[@]}"
    exit 0
fi
[[ ${#packages[@]} -eq 0 ]] && exit 0

echo "Installing system packages: ${packages[*]}"
SUDO=""
[[ "$(id -u)" == 0 ]] || SUDO=sudo
$SUDO apt-get update -qq
# docker-compose without its recommends (it only validates the file; no engine)
plain=() bare=()
for package in "${packages[@]}"; do
    if [[ $package == docker-compose ]]; then bare+=("$package"); else plain+=("$package"); fi
done
[[ ${#plain[@]} -eq 0 ]] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${plain[@]}" >/dev/null
[[ ${#bare[@]} -eq 0 ]] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${bare[@]}" >/dev/null
