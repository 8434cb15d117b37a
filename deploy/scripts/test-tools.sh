#!/usr/bin/env bash
# Installs what the end-to-end tests use besides the stack itself, from Debian's packages:
# Prometheus, docker-compose (to check docker-compose.yml) and Chromium with chromedriver
# (to drive Camunda's Tasklist), libfaketime (a collector whose clock is off, for the clock-skew
# test); and schemathesis from PyPI (the API fuzz run).
set -euo pipefail
# shellcheck source=deploy/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"

# faketime_lib: the path of libfaketime.so.1 on this machine (any architecture), or nothing.
faketime_lib() { find /usr/lib -path '*faketime/libfaketime.so.1' 2>/dev/null | head -n 1; }

case "${1:-install}" in
  install)
    need=()
    command -v prometheus >/dev/null || need+=(prometheus)
    command -v docker-compose >/dev/null || need+=(docker-compose)
    [ -x /usr/bin/chromium ] || need+=(chromium)
    command -v chromedriver >/dev/null || need+=(chromium-driver)
    [ -n "$(faketime_lib)" ] || need+=(libfaketime)
    if [ ${#need[@]} -gt 0 ]; then apt_install --no-install-recommends "${need[@]}"; fi
    if ! command -v st >/dev/null; then
      say "pip install schemathesis==$SCHEMATHESIS_VERSION"
      pip install -q "schemathesis==$SCHEMATHESIS_VERSION" || die "pip install schemathesis failed"
    fi
    say "prometheus, docker-compose, chromium, chromedriver, libfaketime and schemathesis are installed"
    ;;
  -h|--help|help) echo "usage: $(basename "$0") [install]   (apt-get install prometheus docker-compose chromium chromium-driver libfaketime, pip install schemathesis; where missing)" ;;
  *) echo "usage: $(basename "$0") [install]" >&2; exit 2 ;;
esac
