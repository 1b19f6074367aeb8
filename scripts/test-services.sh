#!/usr/bin/env bash
# Install the real local services the test suite starts (make test runs this first).
# Each block below is one service; it does nothing when the service is already there.
set -euo pipefail

# -- redis-server (H3: live state) ---------------------------------------------------------
# tests/sidecars/redis_server.py starts Debian's redis-server on a free loopback port, with
# no persistence, for each test that needs Redis. Needs root (or sudo) and apt-get to install.
if ! command -v redis-server >/dev/null; then
    if ! command -v apt-get >/dev/null; then
        echo "test-services: no apt-get here; install redis-server (Redis >= 6.2) by hand" >&2
        exit 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "test-services: run as root to install redis-server" >&2; exit 1; }
        sudo="sudo -n"
    fi
    echo "test-services: installing redis-server"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    # The package starts a system-wide server on 6379; the tests run their own, so stop it if we can.
    if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
        $sudo systemctl stop redis-server || true
    fi
fi
