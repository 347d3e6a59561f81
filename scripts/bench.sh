#!/usr/bin/env bash
# Run the ledger benchmarks: starts DynamoDB Local (and the rest of the stack), runs the bench
# binary in release mode, stops the stack. Extra arguments go to the bench binary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/stack.sh install
scripts/stack.sh up
trap 'scripts/stack.sh down' EXIT
# shellcheck disable=SC1091
source .stack/env
cargo run --release --locked -p ringledger-bench -- "$@"
