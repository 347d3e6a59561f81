#!/usr/bin/env bash
# The README's first command, small: `ringledger demo` on a fresh embedded store in a temporary
# folder. Fails unless it runs to the end with the ledger's chain verified, the held call settled
# and the emails written.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cargo build -q --locked -p ringledger
OUTPUT="$("$ROOT/target/debug/ringledger" demo --events 200 --db "$WORK/ringledger.db" \
    --outbox-dir "$WORK/outbox" 2>&1)" || { echo "$OUTPUT" >&2; exit 1; }
grep -q "chain verified" <<<"$OUTPUT" || { echo "$OUTPUT" >&2; echo "demo: no verified chain" >&2; exit 1; }
grep -q "settles the hold; balance .*, nothing held" <<<"$OUTPUT" || { echo "$OUTPUT" >&2; echo "demo: the held call was not settled" >&2; exit 1; }
ls "$WORK/outbox"/*.eml >/dev/null 2>&1 || { echo "$OUTPUT" >&2; echo "demo: no email written" >&2; exit 1; }
grep -E "^final balance" <<<"$OUTPUT"
# The postpaid story: two invoices issued, emailed and paid by the pre-authorized card.
OUTPUT="$("$ROOT/target/debug/ringledger" demo-postpaid --db "$WORK/postpaid.db" \
    --outbox-dir "$WORK/postpaid-outbox" 2>&1)" || { echo "$OUTPUT" >&2; exit 1; }
[[ "$(grep -c "outstanding \$0.00" <<<"$OUTPUT")" -eq 2 ]] || { echo "$OUTPUT" >&2; echo "demo-postpaid: two invoices not both paid" >&2; exit 1; }
[[ "$(ls "$WORK/postpaid-outbox" | grep -c '^invoice%3A')" -eq 2 ]] || { echo "$OUTPUT" >&2; echo "demo-postpaid: two invoice emails expected" >&2; exit 1; }
grep -q "sales_tax" <<<"$OUTPUT" || { echo "$OUTPUT" >&2; echo "demo-postpaid: no tax on the second invoice" >&2; exit 1; }
echo "demo-postpaid: two invoices issued, emailed and paid"
