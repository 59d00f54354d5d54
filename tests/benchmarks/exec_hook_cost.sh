#!/usr/bin/env bash
# What kspan's exec and exit hooks cost every exec on the host, from the
# kernel's own BPF run-time statistics (docs/benchmarks.md, "Enrollment at
# exec"): starts the agent with correlation.enroll_from_environment = MODE,
# turns kernel.bpf_stats_enabled on, runs N fork+exec of /bin/true, and
# prints run_time_ns / run_cnt of every exec and exit program over them.
#
#   sudo tests/benchmarks/exec_hook_cost.sh [KSPAN_BINARY] [MODE] [N]
#        (defaults: build/userspace/kspan receiver 2000)
set -euo pipefail
bin=${1:-build/userspace/kspan}
mode=${2:-receiver}
n=${3:-2000}
dir=$(mktemp -d /tmp/kspan-exec-cost-XXXXXX)
trap 'sysctl -qw kernel.bpf_stats_enabled=0; [ -n "${agent:-}" ] && kill -TERM "$agent" 2>/dev/null; wait; rm -rf "$dir"' EXIT
printf 'capture:\n  dns: false\ncorrelation:\n  enroll_from_environment: %s\n' "$mode" >"$dir/kspan.yaml"
KSPAN_PIN_PATH=/sys/fs/bpf/kspan-exec-cost "$bin" run -c "$dir/kspan.yaml" \
  --receiver-grpc 127.0.0.1:0 --receiver-http 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --no-console >"$dir/agent.log" 2>&1 &
agent=$!
sleep 4
kill -0 "$agent" || { cat "$dir/agent.log"; exit 1; }
sysctl -qw kernel.bpf_stats_enabled=1
bpftool prog show -j >"$dir/before.json"
for _ in $(seq "$n"); do /bin/true; done
bpftool prog show -j >"$dir/after.json"
sysctl -qw kernel.bpf_stats_enabled=0
python3 - "$dir/before.json" "$dir/after.json" "$mode" <<'PY'
import json, sys
before = {p["id"]: p for p in json.load(open(sys.argv[1]))}
for p in json.load(open(sys.argv[2])):
    name = p.get("name", "")
    if not name.startswith("kspan_") or not ("exec" in name or "exit" in name):
        continue
    b = before.get(p["id"], {})
    runs = p.get("run_cnt", 0) - b.get("run_cnt", 0)
    ns = p.get("run_time_ns", 0) - b.get("run_time_ns", 0)
    if runs:
        print(f"mode={sys.argv[3]} {name}: {ns / runs:.0f} ns per run over {runs} runs")
PY
