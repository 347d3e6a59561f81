#!/usr/bin/env bash
# Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis): starts
# `ringledger serve` on a fresh embedded store, seeds an account with a card, and fails on any
# 5xx, on a 4xx that moved the balance, and on a payment without a charge (scripts/fuzz_money.py).
# A new seed each run, printed; replay one with RINGLEDGER_FUZZ_SEED=N scripts/fuzz-api.sh.
# Run by scripts/test.sh after the Rust tests; needs `scripts/stack.sh install` (the venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SCHEMATHESIS="$ROOT/.tools/venv/bin/schemathesis"
[[ -x "$SCHEMATHESIS" ]] || { echo "schemathesis missing: run scripts/stack.sh install" >&2; exit 1; }
EXAMPLES="${RINGLEDGER_FUZZ_EXAMPLES:-30}"
SEED="${RINGLEDGER_FUZZ_SEED:-$(python3 -c 'import random; print(random.randrange(1, 2**31))')}"
echo "fuzz seed: $SEED (replay: RINGLEDGER_FUZZ_SEED=$SEED scripts/fuzz-api.sh)"

cargo build -q --locked -p ringledger
RUNNER="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ringledger"
WORK="$(mktemp -d)"
export RINGLEDGER_DB="$WORK/fuzz.db"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
SERVER_PID=""
cleanup() {
    [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$RUNNER" create-account acme >/dev/null
"$RUNNER" accept-terms acme --by fuzz@example.com >/dev/null
"$RUNNER" credit acme 100 --source fuzz-seed --item funds_added >/dev/null
PLATFORM_TOKEN="fuzz-platform-token"
"$RUNNER" serve --addr "127.0.0.1:$PORT" --platform-token "$PLATFORM_TOKEN" >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs "http://127.0.0.1:$PORT/health" >/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
ADMIN_TOKEN="$("$RUNNER" token --account acme --role admin --user fuzz-admin)"
# A real card, so generated Pay Now requests charge and credit (or are refused) for real.
curl -fs "http://127.0.0.1:$PORT/v1/cards" -H "Authorization: Bearer $ADMIN_TOKEN" \
    -H 'content-type: application/json' \
    -d '{"payment_method_token":"pm_card_visa","card_manager_email":"cards@acme.example","role":"primary"}' >/dev/null
export RINGLEDGER_FUZZ_BASE="http://127.0.0.1:$PORT" RINGLEDGER_FUZZ_ADMIN_TOKEN="$ADMIN_TOKEN"
export SCHEMATHESIS_HOOKS=fuzz_money PYTHONPATH="$ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}"

# The account API as an admin and as an operator (JWTs); the platform's authorization route
# with the platform's token (a JWT would only ever get its 401).
PLATFORM_ROUTE="/v1/authorizations"
status=0
for role in admin operator platform; do
    case "$role" in
    operator) TOKEN="$("$RUNNER" token --role operator --user fuzz-operator)" ;;
    admin) TOKEN="$("$RUNNER" token --account acme --role admin --user fuzz-admin)" ;;
    platform) TOKEN="$PLATFORM_TOKEN" ;;
    esac
    if [[ "$role" == platform ]]; then
        FILTER=(--include-path "$PLATFORM_ROUTE")
    else
        FILTER=(--exclude-path "$PLATFORM_ROUTE")
    fi
    echo "== schemathesis as $role ($EXAMPLES examples per operation)"
    # From the temporary folder: schemathesis and hypothesis keep their databases in the
    # working directory (.schemathesis/, .hypothesis/), never in the repository.
    (cd "$WORK" && "$SCHEMATHESIS" run "http://127.0.0.1:$PORT/openapi.json" \
        --checks not_a_server_error,refusals_change_no_balance \
        --header "Authorization: Bearer $TOKEN" \
        "${FILTER[@]}" \
        --max-examples "$EXAMPLES" \
        --seed "$SEED" \
        --no-color) || status=1
done
# Give pending payments (none expected: the simulated processor answers at once) no chance to
# hide: the history must match the processor's own records exactly.
"$ROOT/.tools/venv/bin/python" "$ROOT/scripts/fuzz_money.py" check "$RINGLEDGER_DB.processor.json" || status=1
if grep -q "internal error" "$WORK/serve.log"; then
    echo "the server logged internal errors:" >&2
    grep "internal error" "$WORK/serve.log" | head -20 >&2
    status=1
fi
exit "$status"
