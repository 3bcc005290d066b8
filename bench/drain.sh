#!/usr/bin/env bash
# Queue drain benchmark: the same number of queued messages leave ferrymail and a private Postfix
# instance over one smarthost route to Postfix's smtp-sink on loopback. Prints messages per second for
# each and the ratio ferrymail/postfix.
#
#   ferrymail: the messages are committed to a fresh spool with the spool writer (bench/fill-spool.js),
#              no daemon runs; timed: `ferrymail flush --connection bench`, until it exits.
#   Postfix:   smtp-source injects the same number of messages, which smtpd puts on hold; timed: from
#              `postsuper -H ALL` + `postqueue -f` until the queue directories are empty.
#
# Usage: bench/drain.sh [-m messages] [-l bytes] [-t seconds] [-c connections] [-k] [-n]
#   -m  messages (default 5000)
#   -c  connections of ferrymail's route (default: the route default, 1)
#   -l  message payload in bytes, headers not included (default 2048)
#   -t  time limit of each phase in seconds (default 600): whatever still runs then is killed
#   -k  keep the temporary directory (logs, spools) for inspection
#   -n  ferrymail only (skip Postfix)
# Needs: node, a built tree (npm run build), smtp-sink and smtp-source (Debian package postfix); root for
# the Postfix side (its master runs as root and drops to the postfix user).
set -euo pipefail

MESSAGES=5000
SIZE=2048
LIMIT=600
KEEP=0
PEER=1
CONNS=
while getopts 'm:l:t:c:kn' opt; do
  case "$opt" in
    m) MESSAGES=$OPTARG ;;
    l) SIZE=$OPTARG ;;
    t) LIMIT=$OPTARG ;;
    c) CONNS=$OPTARG ;;
    k) KEEP=1 ;;
    n) PEER=0 ;;
    *) sed -n '11,18p' "$0" >&2; exit 64 ;;
  esac
done
for v in "$MESSAGES" "$SIZE" "$LIMIT" ${CONNS:+"$CONNS"}; do
  [[ "$v" =~ ^[0-9]+$ && "$v" -gt 0 ]] || { echo "drain: numbers must be positive integers" >&2; exit 64; }
done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
NODE=$(command -v node) || { echo "drain: node not found" >&2; exit 69; }
[[ -f "$ROOT/dist/src/cli/ferrymail-main.js" ]] || { echo "drain: run 'npm run build' first" >&2; exit 69; }
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

SMTP_SINK=$(find_tool smtp-sink "${SMTP_SINK:-}") || { echo "drain: smtp-sink not found (Debian: apt-get install postfix)" >&2; exit 69; }
if [[ $PEER -eq 1 ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "drain: the private Postfix instance needs root; run as root or pass -n (ferrymail only)" >&2; exit 77
  fi
  command -v postfix >/dev/null && command -v postconf >/dev/null || { echo "drain: postfix not installed" >&2; exit 69; }
  id postfix >/dev/null 2>&1 || { echo "drain: no postfix user" >&2; exit 69; }
  SMTP_SOURCE=$(find_tool smtp-source "${SMTP_SOURCE:-}") || { echo "drain: smtp-source not found (Debian: apt-get install postfix)" >&2; exit 69; }
fi

WORK=$(mktemp -d -t ferrymail-bench-drain.XXXXXX)
chmod 755 "$WORK" # the postfix user must reach the queue and data directories below it
SINK_PID=''
PF_CONF=''
PF=$HERE/postfix-instance.sh
PF_DIR=$WORK/postfix

cleanup() {
  set +e
  if [[ -n "$SINK_PID" ]] && kill -0 "$SINK_PID" 2>/dev/null; then
    kill "$SINK_PID"
    wait "$SINK_PID" 2>/dev/null
  fi
  [[ -n "$PF_CONF" ]] && bash "$PF" stop "$PF_DIR"
  if [[ $KEEP -eq 1 ]]; then echo "kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM



echo "ferrymail drain benchmark: $MESSAGES messages of $SIZE bytes payload, one smarthost route to smtp-sink, limit ${LIMIT}s per phase"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), CPU busy before start $(cpu_busy), node $("$NODE" --version)$([[ $PEER -eq 1 ]] && echo ", postfix $(postconf -dh mail_version)")"
if rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
  git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || rev="$rev with local changes in src/"
  echo "ferrymail: $rev (the built dist/ is what runs)"
fi

# --- the sink ---------------------------------------------------------------------------------------
# smtp-sink accepts and discards everything, with up to 256 sessions at once; as root it must drop to
# an unprivileged user once its socket is open.
SINK_PORT=$(free_port)
sink_user=()
if [[ $(id -u) -eq 0 ]]; then
  if id postfix >/dev/null 2>&1; then sink_user=(-u postfix); else sink_user=(-u nobody); fi
fi
"$SMTP_SINK" "${sink_user[@]}" -h sink.example "127.0.0.1:$SINK_PORT" 256 >"$WORK/sink.log" 2>&1 &
SINK_PID=$!
wait_port "$SINK_PORT" || { echo "drain: smtp-sink did not start:" >&2; cat "$WORK/sink.log" >&2; exit 70; }

# --- ferrymail --------------------------------------------------------------------------------------
FM=$WORK/ferrymail
mkdir -p "$FM/routes"
cat >"$FM/ferrymail.yaml" <<EOF
hostname: bench.example
listen: ["127.0.0.1:$(free_port)"]
spool: $FM/spool
EOF
cat >"$FM/routes/10-sink.yaml" <<EOF
name: sink
connections: [bench]
transport:
  type: smtp
  host: 127.0.0.1
  port: $SINK_PORT
  tls: none
${CONNS:+  connections: $CONNS}
EOF

t0=$(now_ns)
if ! filled=$(timeout --kill-after=5 "$LIMIT" "$NODE" "$HERE/fill-spool.js" --spool "$FM/spool" --count "$MESSAGES" --size "$SIZE" \
    --from sender@bench.example --to rcpt@remote.example); then
  echo "drain: queuing into the ferrymail spool failed or ran out of time" >&2; exit 70
fi
t1=$(now_ns)
queued=$(find "$FM/spool/queue" -type f | wc -l)
[[ $queued -eq $MESSAGES ]] || { echo "drain: $queued messages in ferrymail's queue, expected $MESSAGES" >&2; exit 70; }
echo "ferrymail: $queued messages queued ($(cut -d' ' -f2 <<<"$filled") bytes each) in $(secs "$t0" "$t1") s"

times >"$WORK/times0"
t0=$(now_ns)
fm_rc=0
timeout --kill-after=5 "$LIMIT" "$NODE" "$ROOT/bin/ferrymail.js" --config-dir "$FM" flush --connection bench \
  >"$FM/flush.out" 2>"$FM/flush.log" || fm_rc=$?
t1=$(now_ns)
times >"$WORK/times1"
FM_S=$(secs "$t0" "$t1")
FM_CPU=$(awk -v a="$(children_cpu "$WORK/times0")" -v b="$(children_cpu "$WORK/times1")" 'BEGIN { printf "%.2f", b - a }')
left=$(find "$FM/spool/queue" -type f | wc -l)
if [[ $fm_rc -ne 0 || $left -ne 0 ]]; then
  echo "drain: ferrymail flush exited $fm_rc with $left messages left (limit ${LIMIT}s):" >&2
  cat "$FM/flush.out" >&2; tail -3 "$FM/flush.log" >&2; exit 70
fi
grep -q "; $MESSAGES delivered, 0 deferred, 0 failed" "$FM/flush.out" || { echo "drain: ferrymail did not deliver every message:" >&2; cat "$FM/flush.out" >&2; exit 70; }
echo "ferrymail: $(tr -d '\n' <"$FM/flush.out")"
echo "ferrymail: $FM_S s, $(rate "$FM_S") messages/s, CPU $FM_CPU s ($(per_msg_ms "$FM_CPU") ms per message)"

# --- Postfix ----------------------------------------------------------------------------------------
if [[ $PEER -eq 1 ]]; then
  mkdir -p "$PF_DIR"
  PF_CONF=$PF_DIR/etc # from here on, cleanup stops the instance
  # hold what arrives, relay everything to the sink (the instance's defaults defer all delivery)
  PF_PORT=$(POSTFIX_MAIN_EXTRA="smtpd_end_of_data_restrictions = check_client_access static:HOLD
relayhost = [127.0.0.1]:$SINK_PORT
defer_transports =" bash "$PF" start "$PF_DIR")
  t0=$(now_ns)
  if ! timeout --kill-after=5 "$LIMIT" "$SMTP_SOURCE" -s 20 -m "$MESSAGES" -l "$SIZE" -M bench.client \
      -f sender@bench.example -t rcpt@remote.example "127.0.0.1:$PF_PORT" >"$WORK/smtp-source.out" 2>&1; then
    echo "drain: smtp-source failed or ran out of time:" >&2; cat "$WORK/smtp-source.out" >&2; exit 70
  fi
  total=$(bash "$PF" queued "$PF_DIR")
  held=$(find "$PF_DIR/queue/hold" -type f | wc -l)
  t1=$(now_ns)
  [[ $total -eq $MESSAGES && $held -eq $MESSAGES ]] || { echo "drain: Postfix holds $held of $total queued messages, expected $MESSAGES" >&2; exit 70; }
  size=$(find "$PF_DIR/queue/hold" -type f -print -quit | xargs -r postcat -c "$PF_CONF" -bh 2>/dev/null | wc -c)
  echo "postfix:   $held messages on hold (about $size bytes each as stored) in $(secs "$t0" "$t1") s"

  postfix_release drain
  # the log is written by postlogd, a moment behind the queue (bounded: 10 s)
  for _ in $(seq 1 100); do
    sent=$(grep -c 'status=sent' "$PF_DIR/maillog" || true)
    [[ $sent -ge $MESSAGES ]] && break
    sleep 0.1
  done
  [[ $sent -eq $MESSAGES ]] || { echo "drain: Postfix logged $sent messages sent, expected $MESSAGES:" >&2; grep -E 'status=(deferred|bounced)' "$PF_DIR/maillog" | tail -3 >&2; exit 70; }
  echo "postfix:   $sent sent to the sink"
  echo "postfix:   $PF_S s, $(rate "$PF_S") messages/s, CPU $PF_CPU s ($(per_msg_ms "$PF_CPU") ms per message)"
  echo "ratio ferrymail/postfix: $(awk -v f="$FM_S" -v p="$PF_S" 'BEGIN { printf "%.2f", p / f }') (messages/s; above 1 means ferrymail drained faster)"
fi
