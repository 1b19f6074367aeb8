#!/usr/bin/env bash
# Local servers the test suite runs against (`make test` calls this first).
set -euo pipefail

# ---- Cosmos DB (H4, issue 16): @vercel/cosmosdb-server from the npm registry ----------------
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
