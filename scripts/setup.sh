#!/usr/bin/env bash
# Prepares a Debian 12 host to build, run and test kspan: installs the
# packages it needs, mounts bpffs and tracefs, configures and builds.
# Idempotent; sourced by scripts/run.sh and scripts/test.sh.
set -euo pipefail

KSPAN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KSPAN_BUILD=${KSPAN_BUILD:-$KSPAN_ROOT/build}

# Build and runtime dependencies, all from Debian 12.
KSPAN_PACKAGES=(
  cmake ninja-build g++ pkg-config clang bpftool libbpf-dev libelf-dev zlib1g-dev
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev libabsl-dev
  libspdlog-dev libyaml-cpp-dev libcli11-dev libcpp-httplib-dev nlohmann-json3-dev
  libcap-dev  # the capability drop after load and attach (userspace/privileges.cpp)
  libboost-dev  # Boost.Beast: the bounded HTTP server (userspace/http_server.cpp)
  libcurl4-openssl-dev libzstd-dev libssl-dev libsqlite3-dev openssl libjemalloc-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # The sanitizer tree and the fuzz targets (the sanitizer stage of scripts/test.sh):
  # clang's ASan/UBSan/libFuzzer runtimes, llvm-symbolizer for their reports.
  libclang-rt-14-dev llvm-14
  curl iproute2
  nginx-light wrk  # HTTP capture acceptance test and benchmark
  # Container tests (tests/containers): rootful podman with CNI bridge
  # networking. runc named beside podman so apt takes it for podman's
  # "crun | runc" (the tests run runc: crun refuses hosts with hybrid
  # cgroups and no systemd); containernetworking-plugins named so apt does
  # not pick netavark for containers-common's network stack; iptables for
  # the bridge plugin's NAT and firewall rules. conmon is podman's monitor.
  runc podman conmon containernetworking-plugins iptables
  # The test image is built from Debian packages (no registry is reachable):
  # debootstrap, with the archive key it verifies the Release file against.
  debootstrap debian-archive-keyring
)

kspan_log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

kspan_require_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "kspan: run this as root (it installs packages and loads BPF programs): sudo $0" >&2
    exit 1
  fi
}

kspan_install_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -eq 0 ] && [ "${CI:-}" != "true" ]; then
    return 0
  fi
  kspan_log "installing packages: ${missing[*]:-(refreshing package lists)}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

kspan_mount_kernel_fs() {
  if ! mountpoint -q /sys/fs/bpf; then
    kspan_log "mounting bpffs at /sys/fs/bpf"
    mount -t bpf bpf /sys/fs/bpf
  fi
  if [ ! -d /sys/kernel/tracing/events ]; then
    kspan_log "mounting tracefs at /sys/kernel/tracing"
    mount -t tracefs tracefs /sys/kernel/tracing
  fi
}

kspan_build() {
  kspan_log "building kspan in $KSPAN_BUILD"
  cmake -S "$KSPAN_ROOT" -B "$KSPAN_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DKSPAN_WERROR="${KSPAN_WERROR:-OFF}" >/dev/null
  cmake --build "$KSPAN_BUILD" -j "$(nproc)"
}

# The second tree CI tests in (the sanitizer stage of scripts/test.sh): clang with
# AddressSanitizer and UndefinedBehaviorSanitizer on all of kspan's code, and
# the libFuzzer targets of tests/fuzz. No benchmarks: their numbers mean
# nothing under the sanitizers. Not -Werror: the gcc tree holds the warning
# line, and clang warns about different things.
KSPAN_BUILD_SANITIZE=${KSPAN_BUILD_SANITIZE:-$KSPAN_ROOT/build-asan}

kspan_build_sanitized() {
  kspan_log "building kspan with ASan+UBSan and the fuzz targets in $KSPAN_BUILD_SANITIZE"
  CC=clang CXX=clang++ cmake -S "$KSPAN_ROOT" -B "$KSPAN_BUILD_SANITIZE" -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKSPAN_FUZZ=ON -DKSPAN_BUILD_BENCHMARKS=OFF \
    -DKSPAN_BUILD_PRIVILEGED_TESTS=OFF >/dev/null
  cmake --build "$KSPAN_BUILD_SANITIZE" -j "$(nproc)"
}

# Runs the unit, end-to-end and fuzz tests of the sanitizer tree (ctest
# arguments may narrow them). Any report fails: in a test's own process it
# aborts the test (-fno-sanitize-recover, ASan's default); in a process a
# test starts (the kspan agent of the end-to-end tests, which a test may
# stop with SIGKILL and never look at its exit status), the report goes to
# a file under sanitizer-reports/ and the run fails when any is there. No
# suppressions: nothing third-party has needed one.
kspan_run_sanitized() {
  local reports="$KSPAN_BUILD_SANITIZE/sanitizer-reports" rc=0
  rm -rf "$reports" && mkdir -p "$reports"
  # detect_leaks: a leak fails the process at exit. log_path: each report to
  # reports/<tool>.<pid>, whichever process it happens in.
  export ASAN_OPTIONS="detect_leaks=1:strict_init_order=1:check_initialization_order=1:log_path=$reports/asan"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan"
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
  kspan_log "running the unit, end-to-end and fuzz tests under ASan+UBSan"
  (cd "$KSPAN_BUILD_SANITIZE" && ctest --output-on-failure --timeout 1800 -L '^(unit|e2e|fuzz)$' "$@") || rc=$?
  if compgen -G "$reports/*" >/dev/null; then
    kspan_log "sanitizer reports:"
    for f in "$reports"/*; do printf -- '--- %s\n' "$f"; cat "$f"; done
    rc=1
  fi
  return "$rc"
}

# Node.js and the npm packages of the correlation demo (tests/correlation/demo:
# two services instrumented with the official OpenTelemetry SDK). Debian's
# nodejs when the host has no node at all; a newer one already installed is
# kept (installing Debian's npm would replace it).
kspan_prepare_demo() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    kspan_log "installing nodejs and npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  local demo="$KSPAN_ROOT/tests/correlation/demo"
  if [ ! -d "$demo/node_modules" ] || [ "$demo/package-lock.json" -nt "$demo/node_modules" ]; then
    kspan_log "installing the demo's npm packages (OpenTelemetry SDK)"
    (cd "$demo" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
}

# The image the container tests run the demo services in
# (tests/containers/build-image.sh): built once per version of that script,
# about a minute; a no-op when the image is there.
kspan_prepare_test_image() {
  "$KSPAN_ROOT/tests/containers/build-image.sh"
}

kspan_setup() {
  kspan_require_root
  kspan_install_packages "${KSPAN_PACKAGES[@]}" "$@"
  kspan_mount_kernel_fs
  kspan_build
}
