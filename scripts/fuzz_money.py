"""Money invariants for the API fuzz run (scripts/fuzz-api.sh).

Loaded by schemathesis as a hooks module (SCHEMATHESIS_HOOKS=fuzz_money): every generated
request that is refused with a 4xx must leave the account's balance where it was. Run as a
script after the fuzzing (`python3 fuzz_money.py check`), it holds the payment history against
the simulated card processor's own records: no payment succeeded without a charge, and every
charge is a succeeded payment.
"""
import json
import os
from decimal import Decimal
import sys
import urllib.request

BASE = os.environ.get("RINGLEDGER_FUZZ_BASE", "")
ADMIN = os.environ.get("RINGLEDGER_FUZZ_ADMIN_TOKEN", "")


def _get(path):
    request = urllib.request.Request(BASE + path, headers={"Authorization": "Bearer " + ADMIN})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _balance():
    return _get("/v1/overview")["balance_usd"]


if __name__ != "__main__":
    import schemathesis

    _before = {}

    @schemathesis.hook
    def before_call(ctx, case, **kwargs):
        _before[id(case)] = _balance()

    @schemathesis.check
    def refusals_change_no_balance(ctx, response, case):
        before = _before.pop(id(case), None)
        if before is None or not 400 <= response.status_code < 500:
            return None
        after = _balance()
        if after != before:
            raise AssertionError(
                f"{case.method} {case.formatted_path} answered {response.status_code} "
                f"but the balance moved from {before} to {after}"
            )
        return None


def check(processor_file):
    history = []
    cursor = None
    for _ in range(1000):
        page = _get("/v1/payments?limit=200" + (f"&cursor={cursor}" if cursor else ""))
        history.extend(page["payments"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    with open(processor_file) as f:
        processor = json.load(f)
    charged = {}
    for payment in processor.get("payments", []):
        outcome = payment["outcome"]
        if "Succeeded" in outcome:
            charged[outcome["Succeeded"]["payment_intent_id"]] = payment["request"]["amount_cents"]
    succeeded = {}
    problems = []
    for record in history:
        if record["status"] == "succeeded":
            pi = record.get("processor_payment_id")
            # Money is exact: decimal strings, never floats.
            cents = Decimal(record["amount_usd"]) * 100
            if cents != cents.to_integral_value():
                problems.append(f"payment {record['payment_id']} is not whole cents")
            if pi not in charged:
                problems.append(f"payment {record['payment_id']} succeeded without a charge")
            elif Decimal(charged[pi]) != cents:
                problems.append(f"payment {record['payment_id']} is {cents} cents, charged {charged[pi]}")
            succeeded[pi] = record
        elif record["status"] == "pending":
            problems.append(f"payment {record['payment_id']} left pending")
    for pi in charged:
        if pi not in succeeded:
            problems.append(f"charge {pi} has no succeeded payment")
    print(f"money check: {len(history)} payments, {len(charged)} charges")
    for problem in problems:
        print("  " + problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(check(sys.argv[2]) if len(sys.argv) == 3 and sys.argv[1] == "check" else 2)
