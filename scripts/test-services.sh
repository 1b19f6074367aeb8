#!/usr/bin/env bash
# Install the real local services the test suite starts (make test runs this first).
# Each block below is one service; it does nothing when the service is already there.
set -euo pipefail

# -- redis-server (live state, events) ---------------------------------------------------------
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

# ---- Cosmos DB (history): @vercel/cosmosdb-server from the npm registry ----------------
# A local server speaking the Cosmos DB NoSQL REST protocol, for the history tests
# (tests/sidecars/test_cosmos*.py) through the real azure-cosmos SDK. Installed, pinned, into
# a cache folder outside the repo: $VOICEGRAPH_TEST_SERVICES (default ~/.cache/voicegraph/
# test-services)/cosmosdb-server; the tests look for lib/cli.js there. Needs node and npm.
cosmos_version=1.0.1
services_dir="${VOICEGRAPH_TEST_SERVICES:-${XDG_CACHE_HOME:-$HOME/.cache}/voicegraph/test-services}"
cosmos_dir="$services_dir/cosmosdb-server"
cosmos_pkg="$cosmos_dir/node_modules/@vercel/cosmosdb-server/package.json"
if [ -f "$cosmos_pkg" ] && grep -q "\"version\": \"$cosmos_version\"" "$cosmos_pkg"; then
    :
elif ! command -v npm >/dev/null; then
    echo "test-services: no npm here; install node and npm to run the Cosmos DB tests" >&2
    exit 1
else
    echo "test-services: installing @vercel/cosmosdb-server@$cosmos_version into $cosmos_dir"
    mkdir -p "$cosmos_dir"
    npm install --silent --no-audit --no-fund --prefix "$cosmos_dir" "@vercel/cosmosdb-server@$cosmos_version" >/dev/null
fi
# ---- end of Cosmos DB ---------------------------------------------------------------------------

# ---- The Speech SDK for JavaScript (the speech peer checked by a client in another language) --
# tests/azure_speech/test_peer_synthesis_js.py runs Microsoft's own JavaScript SDK against the
# local Speech peer; its version is pinned by tests/azure_speech/js/package-lock.json.
js_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/azure_speech/js"
if [ ! -d "$js_dir/node_modules/microsoft-cognitiveservices-speech-sdk" ]; then
    if command -v npm >/dev/null; then
        echo "test-services: installing the Speech SDK for JavaScript into $js_dir"
        npm ci --silent --no-audit --no-fund --prefix "$js_dir" >/dev/null
    else
        echo "test-services: no npm here; the JavaScript SDK check of the speech peer will be skipped" >&2
    fi
fi
