#!/usr/bin/env bash
# Sets up this host (packages, bpffs, build) and runs the whole test suite:
# unit, privileged BPF and end-to-end tests on this kernel, then the
# vm-tests kernel matrix under qemu. Extra arguments go to ctest
# (e.g. -L unit for the unprivileged tests only).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# shellcheck disable=SC2046  # the vm-tests package list is word-split on purpose
kspan_setup $("$KSPAN_ROOT/vm-tests/run-matrix.sh" --packages)
kspan_prepare_demo
kspan_prepare_test_image

# In CI a privileged test that cannot run fails instead of skipping.
if [ "${CI:-}" = "true" ]; then export KSPAN_REQUIRE_BPF=1; fi

kspan_log "running tests"
cd "$KSPAN_BUILD"
exec ctest --output-on-failure --timeout 1800 "$@"
