#!/usr/bin/env bash
# Queue scale benchmark: what a long queue costs, as when a laptop comes back from a week offline. Fills a
# spool with N messages (bench/fill-spool.js, the real durable commit), then times, with the route's
# connection offline:
#   queue list --json, queue list, mailq (sendmail -bp), and status with no daemon (wall time, peak RSS);
#   the daemon from start to listening (and its RSS then), its first offline run (CPU, and how many
#   envelopes it wrote), status with the daemon running, and the next minute's run (CPU);
# then says the connection is up (the state file) and times the daemon's drain of the whole queue to
# Postfix's smtp-sink. The same drain of a 5,000-message queue runs first, so the two rates can be set
# side by side: cost must grow linearly with the queue.
#
# Usage: bench/queue-scale.sh [-m messages] [-l bytes] [-w] [-k]
#   -m  messages (default 100000)
#   -l  message payload in bytes, headers not included (default 2048)
#   -w  skip waiting for the minute's run (about 65 s)
#   -k  keep the temporary directory
# Needs: node, a built tree (npm run build), smtp-sink (Debian package postfix), GNU time (/usr/bin/time).
set -euo pipefail

MESSAGES=100000
SIZE=2048
KEEP=0
MINUTE=1
while getopts 'm:l:wk' opt; do
  case "$opt" in
    m) MESSAGES=$OPTARG ;;
    l) SIZE=$OPTARG ;;
    w) MINUTE=0 ;;
    k) KEEP=1 ;;
    *) sed -n '11,16p' "$0" >&2; exit 64 ;;
  esac
done
for v in "$MESSAGES" "$SIZE"; do
  [[ "$v" =~ ^[0-9]+$ && "$v" -gt 0 ]] || { echo "queue-scale: numbers must be positive integers" >&2; exit 64; }
done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
NODE=$(command -v node) || { echo "queue-scale: node not found" >&2; exit 69; }
[[ -f "$ROOT/dist/src/cli/ferrymail-main.js" ]] || { echo "queue-scale: run 'npm run build' first" >&2; exit 69; }
[[ -x /usr/bin/time ]] || { echo "queue-scale: GNU time not found (Debian: apt-get install time)" >&2; exit 69; }
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
SMTP_SINK=$(find_tool smtp-sink "${SMTP_SINK:-}") || { echo "queue-scale: smtp-sink not found (Debian: apt-get install postfix)" >&2; exit 69; }
HZ=$(getconf CLK_TCK)

WORK=$(mktemp -d -t ferrymail-bench-scale.XXXXXX)
chmod 755 "$WORK"
SINK_PID=''
DAEMON_PID=''
cleanup() {
  set +e
  for p in "$DAEMON_PID" "$SINK_PID"; do
    [[ -n "$p" ]] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
  done
  if [[ $KEEP -eq 1 ]]; then echo "kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SINK_PORT=$(free_port)
sink_user=()
if [[ $(id -u) -eq 0 ]]; then
  if id postfix >/dev/null 2>&1; then sink_user=(-u postfix); else sink_user=(-u nobody); fi
fi
"$SMTP_SINK" "${sink_user[@]}" -h sink.example "127.0.0.1:$SINK_PORT" 256 >"$WORK/sink.log" 2>&1 &
SINK_PID=$!
wait_port "$SINK_PORT" || { echo "queue-scale: smtp-sink did not start" >&2; exit 70; }

# a configuration of its own per spool: a route to the sink on connection "home", a state file that
# says offline until it names home
setup() { # $1: directory
  local dir=$1
  mkdir -p "$dir/routes"
  : >"$dir/online"
  cat >"$dir/ferrymail.yaml" <<EOF
hostname: bench.example
listen: ["127.0.0.1:$(free_port)"]
spool: $dir/spool
online:
  state_file: $dir/online
EOF
  cat >"$dir/routes/10-sink.yaml" <<EOF
name: sink
connections: [home]
transport:
  type: smtp
  host: 127.0.0.1
  port: $SINK_PORT
  tls: none
EOF
}

fill() { # $1: directory, $2: count
  "$NODE" "$HERE/fill-spool.js" --spool "$1/spool" --count "$2" --size "$SIZE" --from sender@bench.example \
    --to rcpt@remote.example --parallel 16 >/dev/null
}

cpu_of() { awk -v hz="$HZ" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"; }
rss_of() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
queued() { find "$1/spool/queue" -type f | wc -l; }
ms_since() { awk -v a="$1" -v b="$(now_ns)" 'BEGIN { printf "%.0f", (b - a) / 1e6 }'; }

# waits until the daemon's CPU time stops moving for 2 s (its run is over); bounded by 600 s
settle() { # $1: pid
  local last='' now i
  for i in $(seq 1 600); do
    now=$(cpu_of "$1")
    [[ "$now" == "$last" ]] && return 0
    last=$now
    sleep 2
  done
}

start_daemon() { # $1: directory; sets DAEMON_PID, and START_MS to the ms from start to listening
  local port t0
  port=$(sed -n 's/^listen: \["127.0.0.1:\([0-9]*\)"\]$/\1/p' "$1/ferrymail.yaml")
  t0=$(now_ns)
  "$NODE" "$ROOT/bin/ferrymail.js" --config-dir "$1" daemon >"$1/daemon.log" 2>&1 &
  DAEMON_PID=$!
  wait_port "$port" || { echo "queue-scale: the daemon did not start" >&2; cat "$1/daemon.log" >&2; exit 70; }
  START_MS=$(ms_since "$t0")
}

stop_daemon() {
  kill "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=''
}

# the drain of a whole queue by the daemon once the connection is up; prints "seconds rate"
drain() { # $1: directory
  local t0 n i
  n=$(queued "$1")
  t0=$(now_ns)
  echo home >"$1/online"
  for i in $(seq 1 36000); do
    [[ -z $(find "$1/spool/queue" -maxdepth 1 -type f -print -quit) ]] && break
    sleep 0.1
  done
  [[ $(queued "$1") -eq 0 ]] || { echo "queue-scale: the queue did not drain" >&2; tail -3 "$1/daemon.log" >&2; exit 70; }
  awk -v a="$t0" -v b="$(now_ns)" -v n="$n" 'BEGIN { s = (b - a) / 1e9; printf "%.2f %.0f\n", s, n / s }'
}

echo "ferrymail queue scale benchmark: $MESSAGES messages of $SIZE bytes payload"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), node $("$NODE" --version)"
if rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
  git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || rev="$rev with local changes in src/"
  echo "ferrymail: $rev (the built dist/ is what runs)"
fi

# the reference: 5,000 messages
SMALL=$WORK/small
setup "$SMALL"
fill "$SMALL" 5000
start_daemon "$SMALL"
settle "$DAEMON_PID"
read -r small_s small_rate < <(drain "$SMALL")
stop_daemon
echo "drain of 5000 by the daemon: $small_s s, $small_rate msg/s"

BIG=$WORK/big
setup "$BIG"
t0=$(now_ns)
fill "$BIG" "$MESSAGES"
echo "filled $MESSAGES in $(ms_since "$t0") ms"
touch "$WORK/filled"

measure() { # $1: label, then the command
  local label=$1 out
  shift
  /usr/bin/time -o "$WORK/time.out" -f '%e %M' "$@" >/dev/null 2>"$WORK/measure.err" || true
  out=$(tail -1 "$WORK/time.out")
  printf '  %-34s %8s s  %6s MB peak RSS\n' "$label" "${out% *}" "$(( ${out#* } / 1024 ))"
}
FM=("$NODE" "$ROOT/bin/ferrymail.js" --config-dir "$BIG")
echo "with $MESSAGES queued, offline, no daemon:"
measure 'queue list --json' "${FM[@]}" queue list --json
measure 'queue list' "${FM[@]}" queue list
measure 'mailq (sendmail -bp)' "$NODE" "$ROOT/bin/sendmail.js" -C "$BIG/ferrymail.yaml" -bp
measure 'status' "${FM[@]}" status

echo "the daemon, offline:"
start_daemon "$BIG"
echo "  start to listening                 $START_MS ms, RSS $(rss_of "$DAEMON_PID") MB"
settle "$DAEMON_PID"
first=$(cpu_of "$DAEMON_PID")
written=$(find "$BIG/spool/queue" -type f -newer "$WORK/filled" | wc -l)
echo "  start and first run                CPU $first s, envelopes written $written, RSS $(rss_of "$DAEMON_PID") MB"
measure 'status (daemon running)' "${FM[@]}" status
if [[ $MINUTE -eq 1 ]]; then
  sleep 65
  echo "  the next minute's run              CPU $(awk -v a="$first" -v b="$(cpu_of "$DAEMON_PID")" 'BEGIN { printf "%.2f", b - a }') s, RSS $(rss_of "$DAEMON_PID") MB"
fi
read -r big_s big_rate < <(drain "$BIG")
echo "drain of $MESSAGES by the daemon: $big_s s, $big_rate msg/s ($(awk -v a="$big_rate" -v b="$small_rate" 'BEGIN { printf "%.2f", a / b }') x the rate of 5000; 1.00 is linear)"
stop_daemon
