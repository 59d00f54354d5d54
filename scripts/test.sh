#!/usr/bin/env bash
# Sets up this host (packages, bpffs, build) and runs the whole test suite:
# unit, privileged BPF and end-to-end tests on this kernel, then the
# vm-tests kernel matrix under qemu, then the sanitizer stage. Extra
# arguments go to ctest (e.g. -L unit for the unprivileged tests only) and
# leave the sanitizer stage out unless --sanitize is given too;
# --no-sanitize leaves it out of a whole run.
#
# The sanitizer stage (the whole run, what .ci/run runs): builds a second tree
# (build-asan/, clang, ASan+UBSan, the libFuzzer targets) and runs the unit
# and end-to-end suites and a short run of every fuzz target there
# (ctest -L 'unit|e2e|fuzz'; no privileged BPF suite, VM matrix or
# benchmarks): kspan_run_sanitized in setup.sh, docs/fuzzing.md. About 40
# more minutes on 2 cores, most of it the build (docs/benchmarks.md,
# "Fuzzing and the sanitizer tree").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

sanitize=""
ctest_args=()
for arg in "$@"; do
  case "$arg" in
    --sanitize) sanitize=1 ;;
    --no-sanitize) sanitize=0 ;;
    *) ctest_args+=("$arg") ;;
  esac
done
# The whole suite includes the sanitizer stage; a chosen part does not.
if [ -z "$sanitize" ]; then
  if [ ${#ctest_args[@]} -eq 0 ]; then sanitize=1; else sanitize=0; fi
fi

# shellcheck disable=SC2046  # the vm-tests package list is word-split on purpose
kspan_setup $("$KSPAN_ROOT/vm-tests/run-matrix.sh" --packages)
kspan_prepare_demo
kspan_prepare_test_image

# In CI a privileged test that cannot run fails instead of skipping.
if [ "${CI:-}" = "true" ]; then export KSPAN_REQUIRE_BPF=1; fi

kspan_log "running tests"
(cd "$KSPAN_BUILD" && ctest --output-on-failure --timeout 1800 "${ctest_args[@]}")

if [ "$sanitize" = 1 ]; then
  started=$SECONDS
  kspan_build_sanitized
  kspan_log "sanitizer tree built in $((SECONDS - started)) s"
  kspan_run_sanitized
  kspan_log "sanitizer stage took $((SECONDS - started)) s"
fi
