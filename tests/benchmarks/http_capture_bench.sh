#!/usr/bin/env bash
# Requests/s of a loopback nginx under wrk, with kspan off and with kspan on
# (the agent tracing nginx with --comm nginx), in alternating rounds of one
# run, so both see the same machine state. Prints each round and the median
# of each mode, and the loss of "on" against "off".
#
#   tests/benchmarks/http_capture_bench.sh [--build-dir DIR] [--rounds N]
#       [--duration SECONDS] [--connections N] [--families http|all]
#       [--root-per-second N] [--variant auto|tp_btf|tracepoint] [--bpf-stats]
#
# --families http  the agent captures HTTP only (tcp, syscalls, dns off)
# --families all   the agent's defaults plus HTTP (what `kspan run --comm nginx` does)
# --root-per-second N  capture.http.root_spans_per_second (default: the agent's
#                  default, 100 per process and second; 0 records every request)
# --variant V      capture.http.variant (default auto: tp_btf on 6.3+)
# --bpf-stats      enable kernel.bpf_stats_enabled during "on" rounds and print
#                  each kspan_http_* program's calls and ns per call (this
#                  accounting itself costs a little: the req/s of such a run are
#                  not the figures to quote)
# Needs root, nginx-light and wrk (scripts/setup.sh installs them).
set -euo pipefail

BUILD=/work/main/build
ROUNDS=5
DURATION=10
CONNECTIONS=16
FAMILIES=http
BPF_STATS=0
ROOT_PER_SECOND=
VARIANT=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --families) FAMILIES=$2; shift 2 ;;
    --bpf-stats) BPF_STATS=1; shift ;;
    --root-per-second) ROOT_PER_SECOND=$2; shift 2 ;;
    --variant) VARIANT=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
KSPAN=$BUILD/userspace/kspan
for tool in /usr/sbin/nginx /usr/bin/wrk /usr/bin/curl "$KSPAN"; do
  [ -x "$tool" ] || { echo "missing: $tool" >&2; exit 1; }
done

DIR=$(mktemp -d /tmp/kspan-http-bench-XXXXXX)
chmod 755 "$DIR"
NGINX_PID=
AGENT_PID=
STATS_WAS=$(cat /proc/sys/kernel/bpf_stats_enabled)
cleanup() {
  [ "$BPF_STATS" = 1 ] && echo "$STATS_WAS" >/proc/sys/kernel/bpf_stats_enabled
  [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
ADMIN=$(free_port)

cat >"$DIR/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $DIR/body; proxy_temp_path $DIR/proxy; fastcgi_temp_path $DIR/fastcgi;
  uwsgi_temp_path $DIR/uwsgi; scgi_temp_path $DIR/scgi;
  server {
    listen 127.0.0.1:$PORT;
    location / { return 200 "hello from nginx\n"; }
  }
}
EOF

# A private pin directory and no OTLP receiver, so a running agent (or
# another benchmark) does not collide with this one.
cat >"$DIR/kspan.yaml" <<EOF
bpf: {pin_path: /sys/fs/bpf/kspan-http-bench-$$}
receiver: {grpc: {enabled: false}, http: {enabled: false}}
EOF
HTTP="{enabled: true, variant: $VARIANT${ROOT_PER_SECOND:+, root_spans_per_second: $ROOT_PER_SECOND}}"
case "$FAMILIES" in
  http) cat >>"$DIR/kspan.yaml" <<EOF
capture:
  tcp: {enabled: false}
  syscalls: {enabled: false}
  dns: false
  http: $HTTP
EOF
  ;;
  all) echo "capture: {http: $HTTP}" >>"$DIR/kspan.yaml" ;;
  *) echo "--families: http or all" >&2; exit 2 ;;
esac

/usr/sbin/nginx -p "$DIR" -c "$DIR/nginx.conf" &
NGINX_PID=$!
for _ in $(seq 50); do curl -fs -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done

agent_on() {
  FIRST_ID=$(max_prog_id)
  "$KSPAN" run -c "$DIR/kspan.yaml" --comm nginx --state-dir "$DIR/state" \
    --admin-listen "127.0.0.1:$ADMIN" --no-console --log-level warn >>"$DIR/agent.log" 2>&1 &
  AGENT_PID=$!
  for _ in $(seq 300); do
    curl -fs -o /dev/null "http://127.0.0.1:$ADMIN/readyz" && return 0
    sleep 0.1
  done
  echo "agent not ready:" >&2; cat "$DIR/agent.log" >&2; exit 1
}
# Per program of this round's agent (loaded after FIRST_ID: another agent
# on the host may have programs of the same names): calls and ns per call.
max_prog_id() { bpftool -j prog show | python3 -c 'import json, sys; print(max([p["id"] for p in json.load(sys.stdin)] + [0]))'; }
bpf_stats() {
  bpftool -j prog show | FIRST_ID=$FIRST_ID python3 -c '
import json, os, sys
first = int(os.environ["FIRST_ID"])
for p in sorted(json.load(sys.stdin), key=lambda p: p.get("name", "")):
    n = p.get("name", "")
    if n.startswith("kspan_http") and p["id"] > first and p.get("run_cnt"):
        print("    %-16s %10d calls %8.0f ns/call" % (n, p["run_cnt"], p["run_time_ns"] / p["run_cnt"]))
' >&2
}
agent_off() {
  local spans
  [ "$BPF_STATS" = 1 ] && bpf_stats
  spans=$(curl -fs "http://127.0.0.1:$ADMIN/metrics" |
    awk '/^kspan_spans_assembled_total\{family="http"\}/ {a=$2}
         /^kspan_bpf_http_root_requests_limited_total/ {l=$2}
         END {print a, "(requests sampled out in the kernel:", l ")"}')
  echo "    http spans assembled: ${spans:-?}" >&2
  kill "$AGENT_PID"; wait "$AGENT_PID" || true; AGENT_PID=
}
run_wrk() {
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$PORT/" |
    awk '/^Requests\/sec:/ {print $2}'
}

wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$PORT/" >/dev/null  # warm-up
OFF=()
ON=()
echo "nginx 1 worker, wrk 1 thread $CONNECTIONS connections ${DURATION}s, kspan families: $FAMILIES, http: $HTTP"
for r in $(seq "$ROUNDS"); do
  off=$(run_wrk); OFF+=("$off")
  echo "round $r  off  $off req/s"
  agent_on
  [ "$BPF_STATS" = 1 ] && echo 1 >/proc/sys/kernel/bpf_stats_enabled
  on=$(run_wrk); ON+=("$on")
  echo "round $r  on   $on req/s"
  agent_off
  [ "$BPF_STATS" = 1 ] && echo "$STATS_WAS" >/proc/sys/kernel/bpf_stats_enabled
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
m_off=$(median "${OFF[@]}")
m_on=$(median "${ON[@]}")
echo "median off $m_off req/s, on $m_on req/s, lost $(awk -v a="$m_off" -v b="$m_on" 'BEGIN {printf "%.1f", 100*(a-b)/a}')%"
