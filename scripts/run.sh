#!/usr/bin/env bash
# Sets up this host (packages, bpffs, build) and runs the agent. With no
# config it uses the embedded default: spans go to a local OTLP/JSON file
# under /var/lib/kspan/spans/ and one line per span is printed here.
# Arguments are passed to `kspan run` (e.g. -c kspan.yaml).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
kspan_setup
kspan_log "starting kspan (Ctrl-C to stop)"
exec "$KSPAN_BUILD/userspace/kspan" run "$@"
