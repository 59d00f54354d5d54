#!/usr/bin/env bash
# Builds the image the container tests run the correlation demo in: Debian 12
# (bookworm) minbase with Debian's nodejs, curl and ca-certificates, made
# with debootstrap from the host's Debian mirror and imported with
# `podman import`. No registry is involved (none is reachable from CI).
#
#   build-image.sh             build localhost/kspan-test-node:<hash> if missing
#   build-image.sh --print-tag print that tag and exit
#
# The tag is the first 12 hex digits of this file's SHA-256: a change here
# is a new image, and tests/support/CMakeLists.txt computes the same tag
# from the same bytes, so a test never runs an image this script would not
# build. Older tags of the image are removed after a build. Debian updates
# reach the image when this script changes (or with KSPAN_TEST_IMAGE_FORCE).
#
# Environment:
#   KSPAN_TEST_IMAGE_MIRROR  Debian mirror (default: the host's apt source for
#                            bookworm main, else http://deb.debian.org/debian)
#   KSPAN_TEST_IMAGE_FORCE=1 rebuild even when the tag exists
#
# Needs root, debootstrap, debian-archive-keyring and podman
# (scripts/setup.sh installs them). Exits non-zero on any failure.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=localhost/kspan-test-node
TAG="$REPO:$(sha256sum "$SELF" | cut -c1-12)"
SUITE=bookworm
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# nodejs runs the demo (its npm packages are bind-mounted from the host);
# curl lets a test probe from inside a container; ca-certificates keeps
# curl and node usable against https endpoints.
PACKAGES=nodejs,curl,ca-certificates
# Same flags as every podman call of the test suite: runc (crun refused a
# host with hybrid cgroups and no systemd) and cgroupfs (CI hosts may have
# no systemd as pid 1).
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
die() { printf 'build-image.sh: %s\n' "$*" >&2; exit 1; }

if [ "${1:-}" = "--print-tag" ]; then
  echo "$TAG"
  exit 0
fi
[ $# -eq 0 ] || die "unknown argument: $1 (usage: build-image.sh [--print-tag])"
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and rootful podman)"
for tool in debootstrap podman sha256sum tar flock; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/setup.sh installs it)"
done
[ -r "$KEYRING" ] || die "$KEYRING is missing (apt-get install debian-archive-keyring)"

image_exists() { "${PODMAN[@]}" image exists "$TAG"; }

if image_exists && [ "${KSPAN_TEST_IMAGE_FORCE:-}" != "1" ]; then
  exit 0
fi

# Two suites (or worktrees) starting at once build the image once: the
# second waits here and then finds it.
mkdir -p /run/lock
exec 9>/run/lock/kspan-test-image.lock
flock 9
if image_exists && [ "${KSPAN_TEST_IMAGE_FORCE:-}" != "1" ]; then
  exit 0
fi

# The mirror the host's apt uses for bookworm main, so a host behind its own
# mirror builds from it; deb.debian.org otherwise.
mirror=${KSPAN_TEST_IMAGE_MIRROR:-}
if [ -z "$mirror" ]; then
  # shellcheck disable=SC2016  # $(...) is apt's format syntax, not the shell's
  mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 2>/dev/null |
    awk -v s="$SUITE" '$2 == s && $3 == "main" { print $1; exit }')
  mirror=${mirror:-http://deb.debian.org/debian}
fi

# On disk, not tmpfs: the unpacked root is some 300 MB before stripping.
work=$(mktemp -d /var/tmp/kspan-test-image.XXXXXX)
root=$work/root
# A debootstrap that fails half-way can leave /proc or /sys mounted in the
# new root: unmount those first (--one-file-system would not cross them,
# and rm must never reach into the host's /proc or /sys).
cleanup() {
  awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/self/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

log "building $TAG: debootstrap $SUITE ($PACKAGES) from $mirror"
start=$SECONDS
# --keyring: a Release file that does not verify is an error, never a
# warning. Output goes to a log shown only on failure (it is long).
if ! debootstrap --variant=minbase --include="$PACKAGES" --keyring="$KEYRING" \
  "$SUITE" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
  tail -n 40 "$work/debootstrap.log" >&2
  [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 40 "$root/debootstrap/debootstrap.log" >&2
  die "debootstrap failed"
fi
chroot "$root" node --version >/dev/null || die "node does not run in the new root"

# Small image: no downloaded .debs, package lists, documentation or
# translations (the tests read none of them). dpkg's own state stays, so
# `dpkg -l` in a container still tells what is inside.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
  "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
  "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/usr/share/lintian \
  "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/*
# Mount point for the demo (bind-mounted read-only by the tests).
mkdir -p "$root/app"
# The container engine supplies these at run time.
: >"$root/etc/hostname"
: >"$root/etc/resolv.conf"

log "importing $TAG"
tar --numeric-owner --xattrs -C "$root" -c . |
  "${PODMAN[@]}" import --quiet \
    --change 'WORKDIR /app' \
    --change 'CMD ["node"]' \
    --change "LABEL org.kspan.test-image.source=tests/containers/build-image.sh" \
    --message "kspan test image: debootstrap $SUITE minbase + $PACKAGES" \
    - "$TAG" >/dev/null
image_exists || die "podman import did not create $TAG"
log "built $TAG in $((SECONDS - start)) s ($("${PODMAN[@]}" image inspect --format '{{.Size}}' "$TAG") bytes)"

# Older builds of this script's image: removed, unless a container still
# uses one (then kept, with a warning: not a reason to fail the build).
"${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$REPO" |
  while read -r old; do
    [ "$old" = "$TAG" ] && continue
    "${PODMAN[@]}" rmi "$old" >/dev/null ||
      printf 'build-image.sh: warning: could not remove %s\n' "$old" >&2
  done
