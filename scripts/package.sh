#!/usr/bin/env bash
# Build the Lambda packages: arm64 (Graviton), provided.al2023, one bootstrap.zip per function
# in target/lambda/<function>/. Installs cargo-lambda and zig (for cross-linking) into the
# project's venv and the aarch64 Rust standard library with rustup, if missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/stack.sh" install >/dev/null
VENV="$ROOT/.tools/venv"
[[ -x "$VENV/bin/cargo-lambda" ]] || "$VENV/bin/pip" install -q 'cargo-lambda==1.9.2' ziglang
rustup target list --installed | grep -q aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
export PATH="$VENV/bin:$PATH"
FUNCTIONS=(usage-debits usage-authorization payments settings activity auto-recharge notifications outbox-relay
    monthly-tax statements webhook processor-events web)
args=()
for f in "${FUNCTIONS[@]}"; do args+=(--bin "$f"); done
cargo lambda build --profile lambda --arm64 --output-format zip "${args[@]}"
for f in "${FUNCTIONS[@]}"; do
    printf '%-22s %s bytes\n' "$f" "$(stat -c %s "target/lambda/$f/bootstrap.zip")"
done
