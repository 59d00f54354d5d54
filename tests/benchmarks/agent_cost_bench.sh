#!/usr/bin/env bash
# What the running agent costs a process it does not trace: the pipe round
# trip of kspan_pipe_pingpong (two processes on one CPU, 2 write(), 2 read(),
# 2 context switches per round trip; neither selected), with the agent off
# and on, in alternating rounds so both see the same machine state. Prints
# each round and the medians, and what "on" adds.
#
#   tests/benchmarks/agent_cost_bench.sh [--build-dir DIR] [--kspan BINARY]
#       [--rounds N] [--family all|none|syscalls|tcp|dns|http|switch_floor]
#       [--select-self] [--no-slow-watch] [--slow-watch scan|sched_switch]
#       [--round-trips N]
#
# --family F     all: the agent's defaults; none: every capture family off
#                (what the running agent costs by its presence); otherwise
#                that family alone; switch_floor: no agent, an empty
#                program on sched_switch held attached by kspan_switch_floor
#                (the floor under the slow-syscall watch, kspan_sys_slow)
# --kspan B      the agent binary (default DIR/userspace/kspan): to compare
#                builds, run the same command with another binary
# --select-self  start the agent with --pid of this script's shell (a
#                process is selected, so the syscall enter/exit programs are
#                attached; the ping-pong processes are still not traced)
# --no-slow-watch  capture.slow_threshold: 0 (no host-wide slow-syscall
#                watch: neither kspan_sys_scan nor kspan_sys_slow is loaded)
# --slow-watch W capture.slow_watch: W (default: the agent's, scan)
# Receivers on ephemeral loopback ports, pins under /sys/fs/bpf/kspan-bench.
# Needs root.
set -euo pipefail

BUILD=build
KSPAN=
ROUNDS=5
FAMILY=all
SELECT=0
NO_SLOW=0
WATCH=
TRIPS=200000
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD=$2; shift 2 ;;
    --kspan) KSPAN=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --family) FAMILY=$2; shift 2 ;;
    --select-self) SELECT=1; shift ;;
    --no-slow-watch) NO_SLOW=1; shift ;;
    --slow-watch) WATCH=$2; shift 2 ;;
    --round-trips) TRIPS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
KSPAN=${KSPAN:-$BUILD/userspace/kspan}
PINGPONG=$BUILD/tests/benchmarks/kspan_pipe_pingpong
WORK=$(mktemp -d /tmp/kspan-agent-cost-XXXXXX)
trap 'rm -rf "$WORK"' EXIT

case "$FAMILY" in
  all) echo "# the agent's defaults" > "$WORK/kspan.yaml" ;;
  syscalls) printf 'capture:\n  tcp: {enabled: false}\n  dns: false\n  http: {enabled: false}\n' > "$WORK/kspan.yaml" ;;
  tcp) printf 'capture:\n  syscalls: {enabled: false}\n  dns: false\n  http: {enabled: false}\n' > "$WORK/kspan.yaml" ;;
  dns) printf 'capture:\n  tcp: {enabled: false}\n  syscalls: {enabled: false}\n  http: {enabled: false}\n' > "$WORK/kspan.yaml" ;;
  none) printf 'capture:\n  syscalls: {enabled: false}\n  tcp: {enabled: false}\n  dns: false\n  http: {enabled: false}\n' > "$WORK/kspan.yaml" ;;
  http) printf 'capture:\n  tcp: {enabled: false}\n  syscalls: {enabled: false}\n  dns: false\n' > "$WORK/kspan.yaml" ;;
  switch_floor) ;;
  *) echo "unknown family $FAMILY" >&2; exit 2 ;;
esac
if [ "$NO_SLOW" = 1 ]; then
  if grep -q '^capture:' "$WORK/kspan.yaml"; then
    sed -i 's/^capture:$/capture:\n  slow_threshold: 0/' "$WORK/kspan.yaml"
  else
    printf 'capture:\n  slow_threshold: 0\n' >> "$WORK/kspan.yaml"
  fi
fi
if [ -n "$WATCH" ]; then
  if grep -q '^capture:' "$WORK/kspan.yaml"; then
    sed -i "s/^capture:\$/capture:\n  slow_watch: $WATCH/" "$WORK/kspan.yaml"
  else
    printf 'capture:\n  slow_watch: %s\n' "$WATCH" >> "$WORK/kspan.yaml"
  fi
fi
extra=()
if [ "$SELECT" = 1 ]; then extra=(--pid $$); fi
ADMIN_PORT=$((20000 + RANDOM % 20000))

run_pingpong() { "$PINGPONG" "$TRIPS" 5 | awk '{print $1}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

offs=()
ons=()
for i in $(seq 1 "$ROUNDS"); do
  off=$(run_pingpong)
  ready=0
  if [ "$FAMILY" = switch_floor ]; then
    "$BUILD/tests/benchmarks/kspan_switch_floor" > "$WORK/agent.log" 2>&1 &
    agent=$!
    for _ in $(seq 1 100); do
      if grep -q attached "$WORK/agent.log"; then ready=1; break; fi
      sleep 0.1
    done
  else
    KSPAN_PIN_PATH=/sys/fs/bpf/kspan-bench "$KSPAN" run -c "$WORK/kspan.yaml" --no-console \
        --state-dir "$WORK/state" --admin-listen "127.0.0.1:$ADMIN_PORT" \
        --receiver-grpc 127.0.0.1:0 --receiver-http 127.0.0.1:0 "${extra[@]}" \
        > "$WORK/agent.log" 2>&1 &
    agent=$!
    for _ in $(seq 1 600); do
      if curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" > /dev/null; then ready=1; break; fi
      sleep 0.1
    done
  fi
  if [ "$ready" != 1 ]; then
    cat "$WORK/agent.log" >&2
    kill "$agent" 2> /dev/null || true
    exit 1
  fi
  sleep 1
  on=$(run_pingpong)
  kill -TERM "$agent"
  wait "$agent" || true
  echo "round $i: off $off ns, on $on ns"
  offs+=("$off")
  ons+=("$on")
done
mo=$(median "${offs[@]}")
mn=$(median "${ons[@]}")
awk -v a="$mo" -v b="$mn" -v f="$FAMILY" \
  'BEGIN { printf "family %s: median off %d ns, on %d ns: +%d ns per round trip (%+.1f %%)\n", f, a, b, b - a, 100 * (b - a) / a }'
