#!/usr/bin/env bash
# Fetch, verify and extract one Debian kernel for the VM matrix.
#
#   lib/fetch-kernel.sh <label>        (labels are listed in kernels.conf)
#
# Prints the path of a kernel.env file describing the extracted kernel
# (KERNEL_PKG, KERNEL_VERSION, KERNEL_RELEASE, VMLINUZ, KCONFIG, MODULES_DIR).
#
# Everything goes through a private apt configuration under
# $VM_CACHE_DIR/apt/<label>/: its own sources.list, preferences, lists, package
# cache and an empty dpkg status, so neither the host's sources nor its pinning
# nor its installed packages play any part, and the host's apt state is never
# written. Trust comes from the Debian archive keyring: apt verifies the suite's
# InRelease signature against it (signed-by=...), and the .deb against the
# SHA256 in the signed Packages index; the cached .deb is re-checked against
# that hash on every run.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DEBIAN_MIRROR=${KSPAN_VM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${KSPAN_VM_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# Suites, oldest first, whose debian-archive-keyring packages extend the host
# keyring when it cannot verify a newer suite (see bootstrap_keyring).
KEYRING_CHAIN=${KSPAN_VM_KEYRING_CHAIN:-bullseye,bullseye-updates bookworm,bookworm-updates trixie,trixie-updates}
# Re-read the archive indices when they are older than this (seconds).
APT_MAX_AGE=${KSPAN_VM_APT_MAX_AGE:-21600}

host_keyring() {
  local k
  for k in "${KSPAN_VM_HOST_KEYRING:-}" \
    /usr/share/keyrings/debian-archive-keyring.pgp \
    /usr/share/keyrings/debian-archive-keyring.gpg; do
    [[ -n $k && -r $k ]] && { printf '%s\n' "$k"; return 0; }
  done
  die "no Debian archive keyring found; install debian-archive-keyring"
}

# apt_setup <dir> <suites,comma-separated> <keyring>
# Writes a private apt tree and sets the APT_OPTS array for it.
apt_setup() {
  local d=$1 suites=$2 keyring=$3 s mirror
  mkdir -p "$d"/etc/{sources.list.d,preferences.d,trusted.gpg.d,apt.conf.d} \
    "$d"/lists/partial "$d"/cache/archives/partial "$d"/state "$d"/log
  : >"$d/state/status"
  {
    for s in ${suites//,/ }; do
      if [[ $s == *-security ]]; then mirror=$SECURITY_MIRROR; else mirror=$DEBIAN_MIRROR; fi
      printf 'deb [arch=amd64 signed-by=%s] %s %s main\n' "$keyring" "$mirror" "$s"
    done
  } >"$d/etc/sources.list.new"
  # A changed source list (new keyring, mirror) invalidates the indices.
  if ! cmp -s "$d/etc/sources.list.new" "$d/etc/sources.list" 2>/dev/null; then
    mv "$d/etc/sources.list.new" "$d/etc/sources.list"
    rm -f "$d/lists/"*_* "$d/.updated"
  else
    rm -f "$d/etc/sources.list.new"
  fi
  APT_OPTS=(
    -o "Dir::Etc::sourcelist=$d/etc/sources.list"
    -o "Dir::Etc::sourceparts=$d/etc/sources.list.d"
    -o "Dir::Etc::preferences=$d/etc/preferences"
    -o "Dir::Etc::preferencesparts=$d/etc/preferences.d"
    -o "Dir::Etc::trusted=$d/etc/trusted.gpg"
    -o "Dir::Etc::trustedparts=$d/etc/trusted.gpg.d"
    -o "Dir::State=$d/state"
    -o "Dir::State::Lists=$d/lists"
    -o "Dir::State::status=$d/state/status"
    -o "Dir::Cache=$d/cache"
    -o "Dir::Cache::archives=$d/cache/archives"
    -o "Dir::Log=$d/log"
    -o "APT::Architecture=amd64"
    -o "APT::Architectures=amd64"
    -o "APT::Default-Release="
    -o "Acquire::Languages=none"
    -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
    # The cache may live where the unprivileged _apt user cannot write;
    # integrity comes from the signed indices, not from the sandbox.
    -o "APT::Sandbox::User=root"
    -o "Debug::NoLocking=0"
  )
}

# apt_update <dir>: refresh the indices if stale. Returns 0 on success,
# 2 on a signature problem, 1 on anything else (network...).
apt_update() {
  local d=$1 out rc=0 age
  if [[ -f $d/.updated ]]; then
    age=$(($(date +%s) - $(stat -c %Y "$d/.updated")))
    ((age < APT_MAX_AGE)) && return 0
  fi
  out=$(apt-get "${APT_OPTS[@]}" --error-on=any -q update 2>&1) || rc=$?
  printf '%s\n' "$out" >"$d/log/update.log"
  if ((rc == 0)); then
    touch "$d/.updated"
    return 0
  fi
  if grep -qE 'NO_PUBKEY|EXPKEYSIG|BADSIG|KEYEXPIRED|not signed|signatures (couldn.t|were invalid)|OpenPGP signature verification failed' <<<"$out"; then
    return 2
  fi
  return 1
}

# When the host keyring cannot verify a suite (a host older than the suite),
# walk a chain of older suites: each one verified with the keys gathered so
# far contributes the keys of its debian-archive-keyring package. Debian
# stable releases ship the next release's keys (that is how a stable system
# upgrades), so bullseye's package vouches for bookworm and bookworm's for
# trixie. The result is the union of the host keyring and those packages.
bootstrap_keyring() {
  local have link d ver sha deb out k union added=0
  have=$(host_keyring)
  mkdir -p "$VM_CACHE_DIR/keyring/debs"
  for link in $KEYRING_CHAIN; do
    d=$VM_CACHE_DIR/apt/keyring-${link//,/+}
    apt_setup "$d" "$link" "$have"
    if ! apt_update "$d"; then
      warn "keyring chain: cannot verify $link with the keys so far; skipping it"
      continue
    fi
    ver=$(apt-cache "${APT_OPTS[@]}" show --no-all-versions debian-archive-keyring | sed -n 's/^Version: //p' | head -n1)
    sha=$(apt-cache "${APT_OPTS[@]}" show --no-all-versions debian-archive-keyring | sed -n 's/^SHA256: //p' | head -n1)
    [[ -n $ver && -n $sha ]] || continue
    out=$VM_CACHE_DIR/keyring/$ver
    if [[ ! -f $out/.extracted ]]; then
      deb=$VM_CACHE_DIR/keyring/debs/debian-archive-keyring_${ver//:/%3a}_all.deb
      [[ -f $deb ]] || (cd "$VM_CACHE_DIR/keyring/debs" && apt-get "${APT_OPTS[@]}" -q download "debian-archive-keyring=$ver" >&2)
      [[ $(sha256sum <"$deb" | cut -d' ' -f1) == "$sha" ]] || die "$deb does not match the signed index"
      rm -rf "$out" && mkdir -p "$out"
      dpkg-deb -x "$deb" "$out/root"
      touch "$out/.extracted"
    fi
    for k in "$out"/root/usr/share/keyrings/debian-archive-keyring.pgp \
      "$out"/root/usr/share/keyrings/debian-archive-keyring.gpg; do
      [[ -r $k ]] || continue
      union=$VM_CACHE_DIR/keyring/union-$(cat "$have" "$k" | sha256sum | cut -c1-16).gpg
      # Binary OpenPGP keyrings concatenate into a keyring.
      cat "$have" "$k" >"$union"
      have=$union
      added=1
      log "keyring chain: added debian-archive-keyring $ver from $link"
      break
    done
  done
  ((added)) || die "could not extend the host keyring through $KEYRING_CHAIN"
  printf '%s\n' "$have"
}

main() {
  local label=${1:?usage: fetch-kernel.sh <label>}
  local line _l suites prefix d rc keyring meta pkg ver sha deb kdir env
  line=$(kernel_conf_line "$label") || die "unknown kernel '$label' (see $VM_TESTS_DIR/kernels.conf)"
  read -r _l suites prefix <<<"$line"
  d=$VM_CACHE_DIR/apt/$label
  env=$VM_CACHE_DIR/kernels/$label/kernel.env

  keyring=$(host_keyring)
  [[ -f $d/keyring ]] && keyring=$(<"$d/keyring")
  apt_setup "$d" "$suites" "$keyring"
  rc=0; apt_update "$d" || rc=$?
  if ((rc == 2)) && [[ $keyring == "$(host_keyring)" ]]; then
    warn "the host keyring cannot verify $suites; bootstrapping the Debian archive keyring"
    keyring=$(bootstrap_keyring)
    apt_setup "$d" "$suites" "$keyring"
    rc=0; apt_update "$d" || rc=$?
  fi
  if ((rc == 2)); then
    die "signature verification failed for $suites (see $d/log/update.log)"
  elif ((rc != 0)); then
    if [[ -f $env ]]; then
      warn "cannot refresh $suites (see $d/log/update.log); using the cached, previously verified kernel"
      printf '%s\n' "$env"
      return 0
    fi
    die "cannot read $suites (see $d/log/update.log)"
  fi
  printf '%s\n' "$keyring" >"$d/keyring"

  # The kernel Debian currently ships in these suites.
  meta=$(apt-cache "${APT_OPTS[@]}" show --no-all-versions linux-image-amd64 | sed -n 's/^Depends: //p' | head -n1)
  pkg=$(sed -E 's/^(linux-image-[^ ,]+-amd64)( .*)?$/\1/' <<<"$meta")
  ver=$(sed -nE 's/^linux-image-[^ ]+ \(= ([^)]+)\).*/\1/p' <<<"$meta")
  [[ $pkg == linux-image-* && -n $ver ]] || die "cannot parse linux-image-amd64's dependency '$meta' in $suites"
  [[ $pkg == "linux-image-$prefix"* ]] || die "$suites now ship $pkg, not a $prefix* kernel; update kernels.conf"
  sha=$(apt-cache "${APT_OPTS[@]}" show "$pkg=$ver" | sed -n 's/^SHA256: //p' | head -n1)
  [[ -n $sha ]] || die "no SHA256 for $pkg $ver in the signed index"

  mkdir -p "$VM_CACHE_DIR/debs"
  deb=$VM_CACHE_DIR/debs/${pkg}_${ver//:/%3a}_amd64.deb
  if [[ ! -f $deb ]] || [[ $(sha256sum <"$deb" | cut -d' ' -f1) != "$sha" ]]; then
    rm -f "$deb"
    log "$label: downloading $pkg $ver"
    (cd "$VM_CACHE_DIR/debs" && apt-get "${APT_OPTS[@]}" -q download "$pkg=$ver" >&2)
    [[ -f $deb ]] || die "apt-get download did not produce $deb"
  fi
  [[ $(sha256sum <"$deb" | cut -d' ' -f1) == "$sha" ]] || die "$deb does not match the signed index"

  kdir=$VM_CACHE_DIR/kernels/$label/${pkg}_$ver
  if [[ ! -f $kdir/.extracted ]]; then
    log "$label: extracting $pkg $ver"
    rm -rf "$kdir" && mkdir -p "$kdir"
    dpkg-deb -x "$deb" "$kdir/root"
    touch "$kdir/.extracted"
  fi
  # Keep only the current version of each kernel.
  find "$VM_CACHE_DIR/kernels/$label" -mindepth 1 -maxdepth 1 -type d ! -path "$kdir" -exec rm -rf {} +
  find "$VM_CACHE_DIR/debs" -name "linux-image-${prefix}*" ! -path "$deb" -delete

  local vmlinuz kconfig mods release
  vmlinuz=$(find "$kdir/root/boot" -name 'vmlinuz-*' | head -n1)
  release=${vmlinuz##*/vmlinuz-}
  kconfig=$kdir/root/boot/config-$release
  mods=
  for m in "$kdir/root/lib/modules/$release" "$kdir/root/usr/lib/modules/$release"; do
    [[ -d $m ]] && mods=$m
  done
  [[ -f $vmlinuz && -f $kconfig && -n $mods ]] || die "unexpected layout in $deb"
  cat >"$env" <<EOT
KERNEL_LABEL=$label
KERNEL_PKG=$pkg
KERNEL_VERSION=$ver
KERNEL_RELEASE=$release
KERNEL_SUITES=$suites
KERNEL_DEB=$deb
KERNEL_SHA256=$sha
VMLINUZ=$vmlinuz
KCONFIG=$kconfig
MODULES_DIR=$mods
EOT
  printf '%s\n' "$env"
}

main "$@"
