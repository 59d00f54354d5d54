#!/usr/bin/env bash
# Build the initramfs pieces for the VM matrix (uncompressed newc cpio: the
# kernel unpacks it without a decompressor, which is the fastest under TCG,
# and concatenated archives are merged by the kernel, so the large common part
# is built once per run and each kernel only adds a small archive).
#
#   lib/make-initramfs.sh base <out.cpio> <file>...
#       busybox, /init, /etc basics and each <file> (binaries, data) at its
#       own absolute path, with every shared library ldd lists and the dynamic
#       loader, at the same paths as on the host. ELF files are copied with
#       debug info stripped (a RelWithDebInfo build would otherwise put
#       hundreds of MB into guest RAM).
#
#   lib/make-initramfs.sh kernel <out.cpio> <kernel.env> <guest.env> <module>...
#       the guest configuration (/kspan-vm/guest.env) and the listed kernel
#       modules that this kernel builds as modules, with their dependencies in
#       load order, decompressed (busybox insmod reads plain .ko only).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

write_cpio() { # <stage dir> <out>
  (cd "$1" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc --owner=0:0 --quiet) >"$2.tmp"
  mv "$2.tmp" "$2"
}

# copy_file <stage> <host path>: same path inside the stage; symlinks followed
# (the loader opens a library by its soname, which may be a link on the host).
copy_file() {
  local stage=$1 src=$2 dst
  dst=$stage$src
  [[ -e $dst ]] && return 0
  mkdir -p "$(dirname "$dst")"
  if [[ -f $src ]] && head -c4 "$src" | grep -q $'\x7fELF' && command -v strip >/dev/null; then
    strip --strip-debug -o "$dst" "$src" 2>/dev/null || cp -L "$src" "$dst"
    chmod --reference="$src" "$dst"
  else
    cp -aL "$src" "$dst"
  fi
}

copy_with_libs() {
  local stage=$1 f=$2 out lib
  [[ -e $f ]] || die "no such file: $f"
  if [[ -d $f ]]; then
    mkdir -p "$stage$(dirname "$f")"
    cp -aL "$f" "$stage$f"
    return 0
  fi
  copy_file "$stage" "$f"
  head -c4 "$f" | grep -q $'\x7fELF' || return 0
  out=$(ldd "$f" 2>&1) || {
    grep -q 'not a dynamic executable' <<<"$out" && return 0
    die "ldd $f failed: $out"
  }
  if grep -q 'not found' <<<"$out"; then
    die "$f: unresolved shared libraries:"$'\n'"$(grep 'not found' <<<"$out")"
  fi
  # "libx.so.1 => /path/libx.so.1 (0x...)" and the loader "/lib64/ld-linux-x86-64.so.2 (0x...)".
  while read -r lib; do
    copy_file "$stage" "$lib"
  done < <(sed -nE 's/.*=> (\/[^ ]+) \(0x.*/\1/p; s/^[[:space:]]*(\/[^ ]+) \(0x.*/\1/p' <<<"$out")
}

build_base() {
  local out=$1; shift
  local stage d bb t
  stage=$(mktemp -d "${TMPDIR:-/tmp}/kspan-initramfs.XXXXXX")
  trap 'rm -rf "$stage"' RETURN
  # Mirror the host's merged-/usr links so library paths mean the same thing.
  for d in bin sbin lib lib64 lib32 libx32; do
    if [[ -L /$d ]]; then
      t=$(readlink "/$d"); t=${t#/}
      ln -s "$t" "$stage/$d"
      mkdir -p "$stage/$t"
    fi
  done
  mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,results,kspan-vm}
  bb=$(command -v busybox) || die "busybox not found (install busybox-static)"
  [[ $(ldd "$bb" 2>&1 || true) == *"not a dynamic executable"* ]] ||
    die "$bb is not statically linked (install busybox-static)"
  cp -L "$bb" "$stage/kspan-vm/busybox"
  for t in $("$stage/kspan-vm/busybox" --list); do
    [[ -e $stage/bin/$t ]] || ln -s /kspan-vm/busybox "$stage/bin/$t"
  done
  cp "$VM_TESTS_DIR/lib/guest-init.sh" "$stage/init"
  chmod 0755 "$stage/init"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$stage/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/etc/group"
  printf '127.0.0.1 localhost kspan-vm\n::1 localhost ip6-localhost ip6-loopback\n' >"$stage/etc/hosts"
  printf 'passwd: files\ngroup: files\nhosts: files\n' >"$stage/etc/nsswitch.conf"
  : >"$stage/etc/resolv.conf"
  echo kspan-vm >"$stage/etc/hostname"
  [[ -r /etc/os-release ]] && cp -L /etc/os-release "$stage/etc/os-release"
  for f in "$@"; do
    copy_with_libs "$stage" "$f"
  done
  write_cpio "$stage" "$out"
}

# Module dependencies come from each module's own .modinfo "depends=" entry:
# Debian's packages do not ship modules.dep (depmod runs at install time), and
# reading .modinfo needs no kmod on the host.
declare -A MOD_INDEX=()
index_modules() { # <modules dir>
  local f b
  while IFS= read -r -d '' f; do
    b=${f##*/}; b=${b%%.ko*}; b=${b//-/_}
    MOD_INDEX[$b]=${f#"$1"/}
  done < <(find "$1/kernel" -name '*.ko*' -print0)
}

decompress_module() { # <file> -> stdout
  case $1 in
    *.ko.xz) xz -dc "$1" ;;
    *.ko.zst) zstd -qdc "$1" ;;
    *.ko.gz) gzip -dc "$1" ;;
    *) cat "$1" ;;
  esac
}

# resolve_module <modules dir> <name>: appends the module and its
# dependencies to ORDER in load order. Returns 0 for a module, 10 if built in,
# 1 if this kernel has neither.
declare -A SEEN=()
ORDER=()
resolve_module() {
  local mdir=$1 name path deps dep
  name=${2//-/_}
  if grep -qE "(^|/)${name//_/[-_]}\.ko$" "$mdir/modules.builtin" 2>/dev/null; then
    return 10
  fi
  path=${MOD_INDEX[$name]:-}
  [[ -n $path ]] || return 1
  [[ -n ${SEEN[$path]:-} ]] && return 0
  SEEN[$path]=1
  deps=$(decompress_module "$mdir/$path" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n1)
  for dep in ${deps//,/ }; do
    resolve_module "$mdir" "$dep" || true
  done
  ORDER+=("$path")
}

build_kernel() {
  local out=$1 kenv=$2 genv=$3; shift 3
  local stage m p n=0 base dst rc status=() MODULES_DIR
  stage=$(mktemp -d "${TMPDIR:-/tmp}/kspan-initramfs.XXXXXX")
  trap 'rm -rf "$stage"' RETURN
  MODULES_DIR=$(sed -n 's/^MODULES_DIR=//p' "$kenv")
  mkdir -p "$stage/kspan-vm/modules"
  cp "$genv" "$stage/kspan-vm/guest.env"
  index_modules "$MODULES_DIR"
  for m in "$@"; do
    rc=0; resolve_module "$MODULES_DIR" "$m" || rc=$?
    case $rc in
      0) status+=("$m=module") ;;
      10) status+=("$m=built-in") ;;
      *) status+=("$m=absent") ;;
    esac
  done
  for p in "${ORDER[@]}"; do
    n=$((n + 1))
    base=${p##*/}; base=${base%%.ko*}
    dst=$stage/kspan-vm/modules/$(printf '%02d' "$n")-$base.ko
    decompress_module "$MODULES_DIR/$p" >"$dst"
  done
  printf '%s\n' "${status[@]}" >"$stage/kspan-vm/modules.status"
  write_cpio "$stage" "$out"
  printf '%s\n' "${status[@]}"
}

case ${1:-} in
  base) shift; build_base "$@" ;;
  kernel) shift; build_kernel "$@" ;;
  *) die "usage: make-initramfs.sh base|kernel ..." ;;
esac
