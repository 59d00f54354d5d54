# shellcheck shell=bash disable=SC2034 # variables used by the scripts that source this
# Shared helpers for the vm-tests scripts. Sourced, never executed.

VM_TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Downloads and extracted kernels (git-ignored). Override to share a cache
# between clones, e.g. on a CI runner with a persistent volume.
VM_CACHE_DIR=${KSPAN_VM_CACHE:-$VM_TESTS_DIR/cache}
# Per-run results (git-ignored): one directory per kernel.
VM_RESULTS_DIR=${KSPAN_VM_RESULTS:-$VM_TESTS_DIR/results}

log() { printf '[vm-tests %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
warn() { log "WARNING: $*"; }
die() { log "ERROR: $*"; exit 1; }

# kernels.conf: "<label> <suite>[,<suite>...] <upstream version prefix>".
# Prints the line for one label, or fails.
kernel_conf_line() {
  local label=$1 l s p
  while read -r l s p; do
    [[ -z $l || $l == \#* ]] && continue
    if [[ $l == "$label" ]]; then
      printf '%s %s %s\n' "$l" "$s" "$p"
      return 0
    fi
  done <"$VM_TESTS_DIR/kernels.conf"
  return 1
}

kernel_conf_labels() {
  local l _rest
  while read -r l _rest; do
    [[ -z $l || $l == \#* ]] && continue
    printf '%s\n' "$l"
  done <"$VM_TESTS_DIR/kernels.conf"
}
