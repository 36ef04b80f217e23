#!/usr/bin/env bash
# Instruction counts of two hot paths, under valgrind's callgrind: a figure that does not move
# with the machine's load, so two builds (before and after a refactor) can be compared.
#
#   Benchmarks/callgrind/count.sh [BIN_PATH]
#
# BIN_PATH holds release builds of chroma-bench and chroma-httpd (default: the output of
# `swift build -c release --show-bin-path`; build them with `swift build -c release --product
# chroma-bench` and `--product chroma-httpd`). Needs valgrind (with callgrind_control),
# objcopy, python3 and awk. The client reaches the server on 127.0.0.1, at a port the kernel
# picks (chroma-httpd has no flag to listen on loopback alone); the script works in a
# temporary directory it removes, stops the server on every exit, and every wait has a
# deadline.
#
# 1. Instructions per local callback: `chroma-bench dispatch --mode local --loops 1`, each
#    callback re-queuing the next on its own color, run twice under callgrind with
#    --separate-threads=yes, for SHORT and LONG seconds. For each run the script takes, from
#    the dump of the thread that ran the callbacks (the loop thread), its total instruction
#    count I and the number of calls callgrind recorded into the callback function
#    (localReusedStep), N. The figure is (I_long - I_short) / (N_long - N_short): the loop
#    thread's start-up and shutdown cost the same in both runs and cancel out, leaving the
#    steady-state cost of one callback, scheduling and loop included. The plain ratio
#    I_long / N_long of the long run (start-up included) is printed beside it.
#
# 2. Instructions per `GET /hello` on one keep-alive connection: chroma-httpd with one loop
#    under callgrind; hello-client.py sends WARMUP requests, then the counters are zeroed
#    (callgrind_control -z), REQUESTS more are sent one after another (each answer read in
#    full and checked), the counters are dumped (callgrind_control -d) with the connection
#    still open, and the dump's total (every thread of the process, user space) is divided by
#    REQUESTS. The total is the dump's `summary:` line, the one callgrind_annotate reports:
#    after a zeroing, callgrind 3.19's `totals:` line (the sum of the dumped cost lines) runs
#    slightly higher, while `summary:` agrees with the difference of two whole runs of
#    different request counts. Then the same for `GET /file4k.bin` (4,096 bytes, answered
#    from the loop's file cache) on a second connection.
#
# valgrind 3.19 cannot read the DWARF that Swift's toolchain writes, so both programs run as
# copies with their debug sections removed (objcopy --strip-debug): the code and the symbol
# table are the same, only the debug info is gone.
# DISPATCH_LOOPS and DISPATCH_STEALING (environment) run the dispatch count with that many loops
# (one chain, on loop 0) and stealing on or off; the default is one loop, where no color can move.
set -euo pipefail

DISPATCH_LOOPS=${DISPATCH_LOOPS:-1}
DISPATCH_STEALING=${DISPATCH_STEALING:-on}
SHORT=1           # seconds of the short dispatch run
LONG=3            # seconds of the long dispatch run
WARMUP=200        # /hello requests before the counters are zeroed
REQUESTS=5000     # /hello requests counted
CALLBACK='$s11ChromaBench15localReusedStepyyYbF'   # localReusedStep(), mangled

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-$(cd "$root" && swift build -c release --show-bin-path)}
for tool in valgrind callgrind_control objcopy python3 awk; do
    command -v "$tool" >/dev/null || { echo "count.sh: $tool not found" >&2; exit 2; }
done
for product in chroma-bench chroma-httpd; do
    [ -x "$bin/$product" ] || {
        echo "count.sh: $bin/$product missing; build it with: swift build -c release --product $product" >&2
        exit 2
    }
done

tmp=$(mktemp -d)
server_pid=""
client_pid=""
cleanup() {
    if [ -n "$client_pid" ]; then kill "$client_pid" 2>/dev/null || true; fi
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -INT "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "count.sh: $*" >&2; exit 1; }

# 1234567 -> 1,234,567
grouped() {
    awk -v n="$1" 'BEGIN {
        s = sprintf("%.0f", n); out = ""
        while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
        print s out
    }'
}

objcopy --strip-debug "$bin/chroma-bench" "$tmp/chroma-bench"
objcopy --strip-debug "$bin/chroma-httpd" "$tmp/chroma-httpd"

# Prints "INSTRUCTIONS CALLBACKS" for the thread dump of one dispatch run that called the
# callback function: its `summary:` line and the sum of the `calls=` lines under a `cfn=`
# naming that function (callgrind names a function in full once per file, then by its id).
callback_thread() {
    local found="" dump counts
    for dump in "$1"-*; do
        counts=$(awk -v target="$CALLBACK" '
            /^c?fn=\(/ {
                spec = $0; sub(/^c?fn=/, "", spec)
                id = spec; sub(/ .*/, "", id)
                if (index(spec, " ") && substr(spec, index(spec, " ") + 1) == target) callback = id
                if ($0 ~ /^cfn=/) callee = id
                next
            }
            /^calls=/ { if (callback != "" && callee == callback) { split(substr($0, 7), f, " "); calls += f[1] }; next }
            /^summary:/ { summary = $2 }
            END { printf "%.0f %.0f\n", summary, calls }
        ' "$dump")
        if [ "${counts#* }" != "0" ]; then
            [ -z "$found" ] || fail "callbacks ran on more than one thread in $1"
            found=$counts
        fi
    done
    [ -n "$found" ] || fail "no thread in $1 called the callback"
    echo "$found"
}

dispatch_run() {
    local seconds=$1 out="$tmp/dispatch-$1.out"
    (cd "$tmp" && timeout $((seconds * 20 + 120)) valgrind --tool=callgrind --separate-threads=yes \
        --callgrind-out-file="$out" --log-file="$tmp/dispatch-$seconds.log" \
        ./chroma-bench dispatch --mode local --loops "$DISPATCH_LOOPS" --colors 1 --stealing "$DISPATCH_STEALING" \
        --duration "$seconds" --rounds 1 \
        --c-peer "$tmp/no-peer" --json >"$tmp/dispatch-$seconds.json" 2>/dev/null) \
        || fail "chroma-bench dispatch under callgrind failed; see $tmp/dispatch-$seconds.log"
    callback_thread "$out"
}

short=$(dispatch_run "$SHORT")
long=$(dispatch_run "$LONG")
read -r short_ir short_n <<<"$short"
read -r long_ir long_n <<<"$long"
[ "$long_n" -gt "$short_n" ] || fail "the long dispatch run ran no more callbacks than the short one"
per_callback=$(awk -v a="$long_ir" -v b="$short_ir" -v m="$long_n" -v n="$short_n" 'BEGIN { printf "%.1f", (a - b) / (m - n) }')
whole_thread=$(awk -v a="$long_ir" -v m="$long_n" 'BEGIN { printf "%.1f", a / m }')

# /hello: the server under callgrind, one client connection.
mkdir "$tmp/root"
valgrind --tool=callgrind --callgrind-out-file="$tmp/httpd.out" --log-file="$tmp/httpd.log" \
    "$tmp/chroma-httpd" --port 0 --root "$tmp/root" --loops 1 >"$tmp/httpd.stdout" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 300); do
    port=$(sed -n 's/^chroma-httpd listening on port \([0-9]*\) .*/\1/p' "$tmp/httpd.stdout")
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "chroma-httpd exited: $(cat "$tmp/httpd.stdout")"
    sleep 0.2
done
[ -n "$port" ] || fail "chroma-httpd did not start listening within 60 s"

expect() {  # waits for the client's line "$1 ..." (at most 300 s)
    local line=""
    read -r -t 300 -u "$client_out" line || fail "the client stopped answering while waiting for '$1'"
    [ "${line%% *}" = "$1" ] || fail "the client: $line"
}
control() {  # callgrind_control exits 0 even when it reaches no process: look for its OK
    timeout 60 callgrind_control "$1" "$server_pid" >"$tmp/control.log" 2>&1 || true
    grep -q '^ *OK' "$tmp/control.log" || fail "callgrind_control $1 failed: $(cat "$tmp/control.log")"
}
# Prints the instructions per request of one client run (dump number $1; the client's
# extra arguments follow): zeroed after the warm-up, dumped after the counted requests.
count_requests() {
    local dump=$1
    shift
    coproc CLIENT { exec python3 "$here/hello-client.py" "$port" "$WARMUP" "$REQUESTS" "$@"; }
    client_pid=$CLIENT_PID
    client_out=${CLIENT[0]}
    client_in=${CLIENT[1]}
    expect warm
    control -z
    echo go >&"$client_in"
    expect done
    control -d
    echo close >&"$client_in"
    wait "$client_pid" || fail "the client failed"
    client_pid=""
    [ -s "$tmp/httpd.out.$dump" ] || fail "callgrind wrote no dump after the requests"
    local total
    total=$(awk '/^summary:/ { print $2 }' "$tmp/httpd.out.$dump")
    [ -n "$total" ] || fail "the dump has no summary line"
    awk -v a="$total" -v n="$REQUESTS" 'BEGIN { printf "%.0f", a / n }'
}
per_request=$(count_requests 1)
# /file4k.bin: 4,096 bytes from the loop's file cache.
head -c 4096 /dev/zero | tr '\0' 'f' >"$tmp/root/file4k.bin"
per_file=$(count_requests 2 /file4k.bin "$tmp/root/file4k.bin")

echo "$(valgrind --version), callgrind instruction counts (Ir), binaries from $bin"
echo "local callback ($DISPATCH_LOOPS loop(s), stealing $DISPATCH_STEALING): $per_callback instructions  (loop thread; $(grouped $((long_n - short_n))) callbacks: the ${LONG} s run's $(grouped "$long_n") minus the ${SHORT} s run's $(grouped "$short_n"); whole ${LONG} s thread / its callbacks: $whole_thread)"
echo "/hello request: $(grouped "$per_request") instructions  (whole process; $(grouped "$REQUESTS") requests on one keep-alive connection after $WARMUP warm-up ones, all answered 200 'Hello, World!')"
echo "/file4k.bin request: $(grouped "$per_file") instructions  (the same, on a second connection, all answered 200 with the 4,096-byte cached file)"
