#!/usr/bin/env bash
# The project's test command: ./scripts/test.sh [extra args for `cargo test`]
#
# Installs and starts the local AWS stack (scripts/stack.sh), always stops it
# on exit, then runs fmt, clippy, the test suite and EXTRA_CHECKS, failing fast.
# Example: ./scripts/test.sh -p ringledger-ledger
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
STACK_SH="$SCRIPT_DIR/stack.sh"
cd "$ROOT"

# Files outside git's ignore list that the run leaves behind fail it (a server started with the
# repository as its working directory, a test writing beside the sources). Every server and
# test writes under .stack/, .tools/, target/ or a temporary folder.
untracked() { git status --porcelain --untracked-files=all 2>/dev/null | sed -n 's/^?? //p' | sort; }
UNTRACKED_BEFORE="$(untracked)"

# Extra checks run after `cargo test`, in order; each entry is one shell
# command run from the repo root with the stack's env loaded. Later issues
# append here, e.g.:
#   EXTRA_CHECKS+=(".tools/venv/bin/cfn-lint infra/template.yaml")
EXTRA_CHECKS=("scripts/demo-check.sh" "scripts/fuzz-api.sh" ".tools/venv/bin/cfn-lint infra/template.yaml" "cargo run -q --locked -p ringledger-sim -- --seeds 500")

STEP_START=$SECONDS
banner() {
    printf '\n==================== %s ====================\n' "$*"
    STEP_START=$SECONDS
}
done_step() { printf -- '---- ok (%ss)\n' "$((SECONDS - STEP_START))"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    "$STACK_SH" down || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

banner "stack: install"
"$STACK_SH" install
done_step

banner "stack: up"
"$STACK_SH" up
# shellcheck source=/dev/null
source "$ROOT/.stack/env"
"$STACK_SH" env
done_step

banner "cargo fmt --all -- --check"
cargo fmt --all -- --check
done_step

banner "cargo clippy --workspace --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
done_step

# `--workspace` unless the caller picked packages (`-p X` narrows the run).
TEST_SCOPE=(--workspace)
for arg in "$@"; do
    [[ "$arg" == "--" ]] && break
    case "$arg" in
    -p | -p* | --package | --package=* | --workspace | --all) TEST_SCOPE=() ;;
    *) ;;
    esac
done
TEST_CMD=(cargo test "${TEST_SCOPE[@]}" --locked "$@")
banner "${TEST_CMD[*]}"
mkdir -p "$ROOT/.stack"
TEST_LOG="$ROOT/.stack/cargo-test.log"
"${TEST_CMD[@]}" 2>&1 | tee "$TEST_LOG"
# Sum every test binary's result line so the run closes on one total (the last binary cargo
# prints is often a doc-test target with nothing in it).
read -r PASSED FAILED < <(awk '/^test result:/ {
    for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
} END { print p + 0, f + 0 }' "$TEST_LOG")
if [[ "$PASSED" -eq 0 ]]; then
    echo "no test ran: that is a failure" >&2
    exit 1
fi
done_step

for check in "${EXTRA_CHECKS[@]}"; do
    banner "$check"
    bash -c "$check"
    done_step
done

banner "nothing left behind in the repository"
LEFT_BEHIND="$(comm -13 <(printf '%s\n' "$UNTRACKED_BEFORE") <(untracked) | sed '/^$/d')"
if [[ -n "$LEFT_BEHIND" ]]; then
    echo "the run left files in the repository (write them under .stack/ or a temporary folder):" >&2
    echo "$LEFT_BEHIND" >&2
    exit 1
fi
done_step

banner "all checks passed"
echo "tests: ${PASSED} passed, ${FAILED} failed"
