#!/usr/bin/env bash
# What reaches the device per acknowledged put, on a disk capped like an SD
# card. Run as root from the project root after `cargo build --release`:
#   benches/sdcard.sh [--iops 200] [--runs 3] [--total1 1000] [--total64 20000]
#                     [--warm 0] [--only ember|etcd] [--data-root DIR]
#                     [--ext4-image MIB [--no-journal]]
#
# Each run starts a fresh single member (Ember, and etcd 3.4 from Debian's
# etcd-server) inside its own v1 blkio cgroup whose writes to the data
# directory's device are capped at --iops write IOs per second, runs puts from
# 1 client and then from 64 clients (256-byte values, 8 connections), and reads
# the cgroup's counters (blkio.throttle.io_serviced and io_service_bytes)
# before and after each load. --warm N puts N values first, uncounted, so the
# counted puts meet a log that has already rotated (and released) segments.
# The load generators run outside the cgroup. Each run also measures the
# floor a lone put stands on at that moment: 300 4 KiB writes with O_DSYNC
# (a write and an fdatasync each, from dd in the same cgroup) into blocks
# written before, and into a fallocated, never written file. Prints one line
# per run and the medians over the runs:
#   ember clients=1 puts=1000 ops_per_s=.. write_ios_per_put=.. write_bytes_per_put=..
#   floor run=1 written_ios_per_sync=.. written_bytes_per_sync=.. fresh_ios_per_sync=.. ...
#   median clients=1 ember ops_per_s=.. ios=.. bytes=.. etcd ... ember/etcd_ops=..
#   median floor written ios=.. bytes=.. fresh ios=.. bytes=..
# --ext4-image MIB makes a file system of its own for the run: an image file
# of that size formatted as ext4 with its journal (as board images ship),
# mounted noatime on a loop device. Counts then come from the loop device's
# own statistics (/sys/block/loopN/stat: write requests, flushes included,
# and sectors), so they include what the journal thread writes on the
# members' behalf, which the cgroup's counters never see. The cap still
# applies to the members' own requests. --no-journal formats that image
# without a journal (as some board images do, to spare the card), so runs
# on it stand beside the root's figures without the root's other tenants.
# Other work on the machine moves the rates, and through the file system's
# journal the counts too (the floor measured 2.3-2.8 write IOs per sync over
# one evening here): compare figures only within one run of this script, and
# a lone put's count against that run's floor.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
iops=200 runs=3 total1=1000 total64=20000 warm=0 only="" data_root="" image_mib=0 mkfs_opts=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --iops) iops=$2; shift 2;; --runs) runs=$2; shift 2;;
    --total1) total1=$2; shift 2;; --total64) total64=$2; shift 2;;
    --warm) warm=$2; shift 2;; --only) only=$2; shift 2;;
    --data-root) data_root=$2; shift 2;;
    --ext4-image) image_mib=$2; shift 2;;
    --no-journal) mkfs_opts=(-O ^has_journal); shift;;
    *) echo "unknown flag $1" >&2; exit 2;;
  esac
done
[[ $(id -u) == 0 ]] || { echo "run as root: the blkio cgroup needs it" >&2; exit 2; }
blkio=/sys/fs/cgroup/blkio
[[ -f $blkio/blkio.throttle.write_iops_device ]] || { echo "no v1 blkio controller at $blkio" >&2; exit 2; }

ember=${EMBER_BIN:-$PWD/target/release/ember}
[[ $only == etcd || -x $ember ]] || { echo "no $ember: run cargo build --release first" >&2; exit 2; }
if [[ $only != ember ]]; then
  if ! command -v etcd >/dev/null; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
  fi
  if ! command -v protoc >/dev/null; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null; fi
  etcdload_src=$here/../../shared/bench/etcdload
  export CARGO_TARGET_DIR=${ETCDLOAD_TARGET:-/tmp/ember-etcdload-target}
  (cd "${ETCDLOAD_SRC:-$etcdload_src}" && cargo build --release -q)
  etcdload=$CARGO_TARGET_DIR/release/etcdload
  unset CARGO_TARGET_DIR
fi

# Durability figures mean nothing on tmpfs: the data lives on a real disk.
work=$(mktemp -d "${data_root:-$PWD/target}/sdcard.XXXXXX")
[[ $(stat -f -c %T "$work") != tmpfs ]] || { echo "$work is on tmpfs" >&2; exit 2; }
pid="" loop="" group=""
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  [[ -n $group ]] && rmdir "$group" 2>/dev/null
  if [[ -n $loop ]]; then
    umount "$work/fs" 2>/dev/null
    losetup -d "$loop" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
if [[ $image_mib -gt 0 ]]; then
  truncate -s "${image_mib}M" "$work/ext4.img"
  mkfs.ext4 -q -F "${mkfs_opts[@]}" "$work/ext4.img"
  loop=$(losetup -f --show "$work/ext4.img")
  mkdir "$work/fs"
  mount -o noatime "$loop" "$work/fs"
  root=$work/fs
else
  root=$work
fi
device=$(findmnt -n -o MAJ:MIN --target "$root" | tr -d ' ')
[[ $device != 0:* ]] || device=$(lsblk -n -o MAJ:MIN "$(findmnt -n -o SOURCE --target "$root")" | head -1 | tr -d ' ')
group=$blkio/ember-sdcard-$$
mkdir "$group"
echo "$device $iops" >"$group/blkio.throttle.write_iops_device"

client=31479 peer=31480
start() { # $1 = ember|etcd, $2 = data dir
  # Another member on these ports would answer the load in this one's place.
  if (exec 3<>"/dev/tcp/127.0.0.1/$client") 2>/dev/null; then
    echo "port $client is already in use: is another run of this script going?" >&2; exit 1
  fi
  local args=(--name n1 --data-dir "$2"
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client"
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer"
    --initial-cluster "n1=http://127.0.0.1:$peer" --initial-cluster-state new)
  if [[ $1 == etcd ]]; then
    sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$group" etcd "${args[@]}" >"$2.log" 2>&1 &
  else
    sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$group" "$ember" serve "${args[@]}" >"$2.log" 2>&1 &
  fi
  pid=$!
  local t
  for t in $(seq 1 100); do
    load "$1" put 1 1 1 >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$1 did not come up; log in $2.log" >&2; tail -5 "$2.log" >&2; exit 1
}
stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; }
load() { # $1 system $2 op $3 clients $4 conns $5 total: prints the op= line
  if [[ $1 == etcd ]]; then
    "$etcdload" "http://127.0.0.1:$client" "$2" "$3" "$4" "$5" 100000 256
  else
    "$ember" --endpoints "127.0.0.1:$client" bench "$2" --clients "$3" --conns "$4" \
      --total "$5" --key-size 8 --val-size 256 --keyspace 100000 | grep '^op=' | tail -1
  fi
}
# Write IOs and bytes sent to the device so far: all of them on a loop
# device of the run's own, else the cgroup's.
counters() {
  local ios bytes
  if [[ -n $loop ]]; then
    awk '{print $5, $7 * 512}' "/sys/block/$(basename "$loop")/stat"
    return
  fi
  ios=$(awk -v d="$device" '$1==d && $2=="Write"{print $3}' "$group/blkio.throttle.io_serviced")
  bytes=$(awk -v d="$device" '$1==d && $2=="Write"{print $3}' "$group/blkio.throttle.io_service_bytes")
  echo "${ios:-0} ${bytes:-0}"
}
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<" $2"; }

# Write IOs and bytes per sync of 4 KiB O_DSYNC writes into a file of
# written blocks ($1 = written) or of reserved, never written ones
# ($1 = fresh). The written file is filled with direct writes, so no large
# page-cache folio makes each sync write back more than its page.
probe_floor() {
  local file=$root/floor-$1 syncs=300 before after
  rm -f "$file"
  if [[ $1 == written ]]; then
    dd if=/dev/zero of="$file" bs=1M count=8 oflag=direct conv=fsync status=none
  else
    fallocate -l 8M "$file"
  fi
  sync
  before=$(counters)
  sh -c 'echo $$ >"$0/cgroup.procs" && exec dd if=/dev/zero of="$1" bs=4k count="$2" oflag=dsync conv=notrunc status=none' \
    "$group" "$file" "$syncs"
  after=$(counters)
  rm -f "$file"
  awk -v b="$before" -v a="$after" -v n="$syncs" 'BEGIN{
    split(b, x, " "); split(a, y, " ");
    printf "%.2f %.0f\n", (y[1]-x[1])/n, (y[2]-x[2])/n }'
}
declare -A rows rates
run_one() { # $1 system $2 run number
  local sys=$1 dir=$root/$1-$2 clients conns total line before after
  rm -rf "$dir"
  start "$sys" "$dir"
  [[ $warm -gt 0 ]] && load "$sys" put 64 8 "$warm" >/dev/null
  for clients in 1 64; do
    if [[ $clients == 1 ]]; then conns=1 total=$total1; else conns=8 total=$total64; fi
    sync
    before=$(counters)
    line=$(load "$sys" put "$clients" "$conns" "$total")
    sync # what the member left for writeback reaches the device too
    after=$(counters)
    local n ops ios bytes
    n=$(field total "$line")
    ops=$(field ops_per_s "$line")
    read -r ios bytes < <(awk -v b="$before" -v a="$after" -v n="$n" 'BEGIN{
      split(b, x, " "); split(a, y, " ");
      printf "%.2f %.0f\n", (y[1]-x[1])/n, (y[2]-x[2])/n }')
    echo "$sys run=$2 clients=$clients puts=$n ops_per_s=$ops write_ios_per_put=$ios write_bytes_per_put=$bytes"
    rows[$sys,$clients]+="$ops $ios $bytes;"
    rates[$sys,$clients,$2]=$ops
  done
  stop
  rm -rf "$dir"
}
median() { # $1 = "a b c;a b c;..." $2 = column: median of that column
  tr ';' '\n' <<<"$1" | awk -v c="$2" 'NF{print $c}' | sort -g |
    awk '{v[NR]=$1} END{ if (NR==0) print "na"; else if (NR%2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2 }'
}

floors=""
journal="with journal"
[[ ${#mkfs_opts[@]} -eq 0 ]] || journal="without journal"
echo "device $device capped at $iops write IOs/s; data under $root${loop:+ (ext4 $journal on $loop, counted at the device)}"
for ((r = 1; r <= runs; r++)); do
  for sys in etcd ember; do
    [[ -n $only && $only != "$sys" ]] && continue
    run_one "$sys" "$r"
  done
  read -r written_ios written_bytes < <(probe_floor written)
  read -r fresh_ios fresh_bytes < <(probe_floor fresh)
  echo "floor run=$r written_ios_per_sync=$written_ios written_bytes_per_sync=$written_bytes fresh_ios_per_sync=$fresh_ios fresh_bytes_per_sync=$fresh_bytes"
  floors+="$written_ios $written_bytes $fresh_ios $fresh_bytes;"
done
for clients in 1 64; do
  out="median clients=$clients"
  for sys in ember etcd; do
    [[ -n $only && $only != "$sys" ]] && continue
    out+=" $sys ops_per_s=$(median "${rows[$sys,$clients]}" 1)"
    out+=" ios=$(median "${rows[$sys,$clients]}" 2) bytes=$(median "${rows[$sys,$clients]}" 3)"
  done
  if [[ -z $only ]]; then # the ratio within each run, then the median of those
    ratios=""
    for ((r = 1; r <= runs; r++)); do
      ratios+="$(awk -v a="${rates[ember,$clients,$r]}" -v b="${rates[etcd,$clients,$r]}" 'BEGIN{printf "%.3f", a/b}');"
    done
    out+=" ember/etcd_ops=$(median "$ratios" 1)"
  fi
  echo "$out"
done
echo "median floor written ios=$(median "$floors" 1) bytes=$(median "$floors" 2) fresh ios=$(median "$floors" 3) bytes=$(median "$floors" 4)"
