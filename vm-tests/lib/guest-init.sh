#!/bin/sh
# shellcheck shell=dash disable=SC3045,SC3040 # busybox ash: ulimit -l/-n and pipefail exist
# /init of the vm-tests guest (busybox ash). Runs as PID 1, so it must never
# exit: every path ends in poweroff (or, failing that, a sysrq reboot, which
# qemu -no-reboot turns into an exit).
#
# Output: ttyS0 (the console, saved as console.log) gets the kernel log and a
# live copy of the test output for people. ttyS1 (results.serial) gets only
# the result files, gzip-compressed (the emulated UART moves ~500 KB/s) and
# base64-encoded between markers, so kernel messages can never corrupt them:
#   KSPAN-VM-RESULTS-BEGIN
#   KSPAN-VM-FILE <name>
#   <base64 lines>
#   KSPAN-VM-FILE-END
#   ...
#   KSPAN-VM-RESULTS-END
# The host treats a missing END marker as a failed run.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp LANG=C.UTF-8

say() { echo "kspan-vm: $*" >/dev/console; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# The initramfs root is already a writable tmpfs/ramfs; no separate /tmp
# mount, which would hide files the image placed under /tmp.
mkdir -p /tmp /run
chmod 1777 /tmp
mount -t bpf bpf /sys/fs/bpf || say "cannot mount bpffs at /sys/fs/bpf"
mount -t tracefs tracefs /sys/kernel/tracing || say "cannot mount tracefs at /sys/kernel/tracing"
[ -d /sys/kernel/debug ] && mount -t debugfs debugfs /sys/kernel/debug
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null

# shellcheck source=/dev/null
. /kspan-vm/guest.env

R=/results
mkdir -p $R

for m in /kspan-vm/modules/*.ko; do
  [ -e "$m" ] || continue
  insmod "$m" || say "insmod $m failed"
done

hostname kspan-vm
ip link set lo up
sysctl -qw net.ipv6.conf.lo.disable_ipv6=0 2>/dev/null
ip -6 addr show dev lo 2>/dev/null | grep -q '::1/128' || ip -6 addr add ::1/128 dev lo
# BPF memory is charged to RLIMIT_MEMLOCK before 5.11.
ulimit -l unlimited
ulimit -n 65536

{
  echo "uname: $(uname -a)"
  echo "release: $(uname -r)"
  echo "cmdline: $(cat /proc/cmdline)"
  echo "cpus: $(nproc)"
  echo "memory_kb: $(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo)"
  if [ -e /sys/kernel/btf/vmlinux ]; then echo "btf: yes"; else echo "btf: no"; fi
  if [ -e /sys/kernel/tracing/kprobe_events ]; then echo "kprobe_events: yes"; else echo "kprobe_events: no"; fi
  echo "modules_requested: $(tr '\n' ' ' </kspan-vm/modules.status)"
  echo "modules_loaded: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
  echo "lo:"; ip addr show dev lo
} >$R/meta.txt 2>&1

if [ "$KSPAN_VM_SHELL" = 1 ]; then
  say "interactive shell; the suite would run as:"
  say "  cd /tmp && KSPAN_REQUIRE_BPF=1 KSPAN_BINARY=$KSPAN_VM_KSPAN_BIN $KSPAN_VM_TEST_BIN"
  export KSPAN_REQUIRE_BPF=1 KSPAN_BINARY="$KSPAN_VM_KSPAN_BIN"
  setsid cttyhack sh -l
  poweroff -f
fi

# The refusal check: with kernel BTF hidden, kspan must refuse to start with
# a clear message. Run first: it is quick and must not depend on the suite.
if [ "$KSPAN_VM_REFUSAL" = 1 ]; then
  say "refusal check: $KSPAN_VM_KSPAN_BIN $KSPAN_VM_REFUSAL_ARGS with /sys/kernel/btf hidden"
  mount -t tmpfs -o size=64k,mode=0555 nobtf /sys/kernel/btf
  if [ -e /sys/kernel/btf/vmlinux ]; then
    echo "could not hide /sys/kernel/btf/vmlinux" >$R/refusal.out
    echo 125 >$R/refusal.rc
  else
    cd /tmp || true
    # shellcheck disable=SC2086 # word splitting of the argument list is intended
    KSPAN_BINARY=$KSPAN_VM_KSPAN_BIN timeout "$KSPAN_VM_REFUSAL_TIMEOUT" \
      "$KSPAN_VM_KSPAN_BIN" $KSPAN_VM_REFUSAL_ARGS </dev/null >$R/refusal.out 2>&1
    echo $? >$R/refusal.rc
    cd /
  fi
  umount /sys/kernel/btf
  cat $R/refusal.out >/dev/console
fi

if [ -n "$KSPAN_VM_TEST_BIN" ]; then
  say "running $KSPAN_VM_TEST_BIN"
  cut -d' ' -f1 /proc/uptime >$R/tests.start
  cd /tmp || true
  set -o pipefail
  # shellcheck disable=SC2086 # word splitting of the argument lists is intended
  env KSPAN_REQUIRE_BPF=1 KSPAN_BINARY="$KSPAN_VM_KSPAN_BIN" $KSPAN_VM_EXTRA_ENV \
    timeout "$KSPAN_VM_TEST_TIMEOUT" "$KSPAN_VM_TEST_BIN" --gtest_color=no \
    --gtest_output=json:$R/gtest.json $KSPAN_VM_TEST_ARGS </dev/null 2>&1 |
    tee $R/gtest.out >/dev/console
  echo $? >$R/gtest.rc
  set +o pipefail
  cd /
  cut -d' ' -f1 /proc/uptime >$R/tests.end
  say "tests exited with $(cat $R/gtest.rc)"
fi

dmesg >$R/dmesg.txt 2>&1

# Results to the second serial port. Raw mode: no \n -> \r\n translation.
if [ -c /dev/ttyS1 ]; then
  OUT=/dev/ttyS1
  stty -F $OUT raw -echo 2>/dev/null
else
  say "no /dev/ttyS1; results go to the console"
  OUT=/dev/console
fi
{
  echo "KSPAN-VM-RESULTS-BEGIN"
  for f in "$R"/*; do
    [ -f "$f" ] || continue
    echo "KSPAN-VM-FILE ${f##*/}"
    gzip -c "$f" | base64
    echo "KSPAN-VM-FILE-END"
  done
  echo "KSPAN-VM-RESULTS-END"
} >$OUT
# Closing a serial tty waits until its output has drained.
sync
say "done; powering off"
poweroff -f
sleep 5
echo b >/proc/sysrq-trigger
sleep 60
