#!/usr/bin/env bash
# Local delivery benchmark: the same number of queued messages for one local user are delivered into
# that user's Maildir by ferrymail's local transport and by Postfix's local(8) (home_mailbox = Maildir/).
# Prints messages per second for each and the ratio ferrymail/postfix.
#
#   ferrymail: the messages are committed to a fresh spool with the spool writer (bench/fill-spool.js),
#              no daemon runs; timed: `ferrymail flush`, until it exits (every message in new/).
#   Postfix:   smtp-source injects the same number of messages, which smtpd puts on hold; timed: from
#              `postsuper -H ALL` + `postqueue -f` until the queue is empty and every message is in new/.
#
# Usage: bench/local.sh [-m messages] [-l bytes] [-r rounds] [-t seconds] [-k] [-n]
#   -m  messages (default 5000)
#   -r  rounds, alternating ferrymail and Postfix; medians compared (default 3)
#   -l  message payload in bytes, headers not included (default 2048)
#   -t  time limit of each phase in seconds (default 600): whatever still runs then is killed
#   -k  keep the temporary directory (logs, spools, Maildirs) for inspection
#   -n  ferrymail only (skip Postfix)
# Needs root (users are made for the run, one per round and side, and removed after; both deliver as that user), node, a built
# tree (npm run build), and for the Postfix side the Debian package postfix (smtp-source).
set -euo pipefail

MESSAGES=5000
ROUNDS=3
SIZE=2048
LIMIT=600
KEEP=0
PEER=1
while getopts 'm:l:t:r:kn' opt; do
  case "$opt" in
    m) MESSAGES=$OPTARG ;;
    l) SIZE=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    t) LIMIT=$OPTARG ;;
    k) KEEP=1 ;;
    n) PEER=0 ;;
    *) sed -n '11,17p' "$0" >&2; exit 64 ;;
  esac
done
for v in "$MESSAGES" "$SIZE" "$LIMIT" "$ROUNDS"; do
  [[ "$v" =~ ^[0-9]+$ && "$v" -gt 0 ]] || { echo "local: numbers must be positive integers" >&2; exit 64; }
done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
NODE=$(command -v node) || { echo "local: node not found" >&2; exit 69; }
[[ -f "$ROOT/dist/src/cli/ferrymail-main.js" ]] || { echo "local: run 'npm run build' first" >&2; exit 69; }
[[ $(id -u) -eq 0 ]] || { echo "local: needs root (a user is made for the run, and mail is delivered as that user)" >&2; exit 77; }
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
if [[ $PEER -eq 1 ]]; then
  command -v postfix >/dev/null && command -v postconf >/dev/null || { echo "local: postfix not installed" >&2; exit 69; }
  id postfix >/dev/null 2>&1 || { echo "local: no postfix user" >&2; exit 69; }
  SMTP_SOURCE=$(find_tool smtp-source "${SMTP_SOURCE:-}") || { echo "local: smtp-source not found (Debian: apt-get install postfix)" >&2; exit 69; }
fi

WORK=$(mktemp -d -t ferrymail-bench-local.XXXXXX)
chmod 755 "$WORK" # the user and the postfix user must reach the folders below it
BENCH_USER=fmbench$$
USERS=()
PF_CONF=''
PF=$HERE/postfix-instance.sh
PF_DIR=$WORK/postfix

cleanup() {
  set +e
  [[ -n "$PF_CONF" ]] && bash "$PF" stop "$PF_DIR"
  for u in "${USERS[@]}"; do pkill -KILL -u "$u" 2>/dev/null; userdel "$u" 2>/dev/null || { sleep 1; userdel "$u" 2>/dev/null; }; done
  if [[ $KEEP -eq 1 ]]; then echo "kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_new() { find "$1/Maildir/new" -type f 2>/dev/null | wc -l; }

# a user of its own for every round of each side (Postfix's local(8) keeps passwd entries it looked up)
new_user() { # $1: name, $2: home
  useradd -M -d "$2" -s /usr/sbin/nologin "$1"
  USERS+=("$1")
  mkdir -p "$2" && chown "$1:" "$2"
}

echo "ferrymail local delivery benchmark: $MESSAGES messages of $SIZE bytes payload into one user's Maildir, limit ${LIMIT}s per phase"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), CPU busy before start $(cpu_busy), node $("$NODE" --version)$([[ $PEER -eq 1 ]] && echo ", postfix $(postconf -dh mail_version)")"
echo "file system of the Maildirs: $(df -T "$WORK" | awk 'NR == 2 { print $2 }')"
if rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
  git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || rev="$rev with local changes in src/"
  echo "ferrymail: $rev (the built dist/ is what runs)"
fi

# --- ferrymail --------------------------------------------------------------------------------------
FM=$WORK/ferrymail
mkdir -p "$FM"

# one ferrymail round: fresh spool and Maildir, fill, time the flush; sets FM_S and FM_CPU
fm_round() {
  local r=$1 home=$WORK/home-fm-$1 spool=$FM/spool-$1 user=${BENCH_USER}f$1 filled t0 t1 rc=0 got left
  new_user "$user" "$home"
  printf '%s\n' 'hostname: bench.example' "listen: [\"127.0.0.1:$(free_port)\"]" "spool: $spool" \
    'local:' '  aliases: ""' '  root: root' '  mailbox: maildir' >"$FM/ferrymail.yaml"
  if ! filled=$(timeout --kill-after=5 "$LIMIT" "$NODE" "$HERE/fill-spool.js" --spool "$spool" --count "$MESSAGES" --size "$SIZE" \
      --from sender@remote.example --to "$user@bench.example"); then
    echo "local: queuing into the ferrymail spool failed or ran out of time" >&2; exit 70
  fi
  times >"$WORK/times0"
  t0=$(now_ns)
  timeout --kill-after=5 "$LIMIT" "$NODE" "$ROOT/bin/ferrymail.js" --config-dir "$FM" flush \
    >"$FM/flush.out" 2>"$FM/flush.log" || rc=$?
  t1=$(now_ns)
  times >"$WORK/times1"
  FM_S=$(secs "$t0" "$t1")
  FM_CPU=$(awk -v a="$(children_cpu "$WORK/times0")" -v b="$(children_cpu "$WORK/times1")" 'BEGIN { printf "%.2f", b - a }')
  got=$(in_new "$home")
  left=$(find "$spool/queue" -type f | wc -l)
  if [[ $rc -ne 0 || $left -ne 0 || $got -ne $MESSAGES ]]; then
    echo "local: ferrymail flush exited $rc, $left messages left, $got in new/ (limit ${LIMIT}s):" >&2
    cat "$FM/flush.out" >&2; tail -3 "$FM/flush.log" >&2; exit 70
  fi
  echo "ferrymail round $r: $(tail -n 1 "$FM/flush.out")"
  echo "ferrymail round $r: $FM_S s, $(rate "$FM_S") messages/s, CPU $FM_CPU s ($(per_msg_ms "$FM_CPU") ms per message, the agent's included)"
}

# one Postfix round: inject and hold, then time the release; sets PF_S and PF_CPU
pf_round() {
  local r=$1 home=$WORK/home-pf-$1 user=${BENCH_USER}p$1 total held got
  new_user "$user" "$home"
  if ! timeout --kill-after=5 "$LIMIT" "$SMTP_SOURCE" -s 20 -m "$MESSAGES" -l "$SIZE" -M bench.client \
      -f sender@remote.example -t "$user@bench.example" "127.0.0.1:$PF_PORT" >"$WORK/smtp-source.out" 2>&1; then
    echo "local: smtp-source failed or ran out of time:" >&2; cat "$WORK/smtp-source.out" >&2; exit 70
  fi
  total=$(bash "$PF" queued "$PF_DIR")
  held=$(find "$PF_DIR/queue/hold" -type f | wc -l)
  [[ $total -eq $MESSAGES && $held -eq $MESSAGES ]] || { echo "local: Postfix holds $held of $total queued messages, expected $MESSAGES" >&2; exit 70; }
  postfix_release local
  got=$(in_new "$home")
  [[ $got -eq $MESSAGES ]] || { echo "local: Postfix put $got messages in new/, expected $MESSAGES:" >&2; grep -E 'status=(deferred|bounced)' "$PF_DIR/maillog" | tail -3 >&2; exit 70; }
  echo "postfix   round $r: $got delivered into the Maildir"
  echo "postfix   round $r: $PF_S s, $(rate "$PF_S") messages/s, CPU $PF_CPU s ($(per_msg_ms "$PF_CPU") ms per message)"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

if [[ $PEER -eq 1 ]]; then
  mkdir -p "$PF_DIR"
  PF_CONF=$PF_DIR/etc # from here on, cleanup stops the instance
  # hold what arrives; deliver bench.example locally into ~/Maildir/ (the instance defers all else)
  PF_PORT=$(POSTFIX_MAIN_EXTRA="smtpd_end_of_data_restrictions = check_client_access static:HOLD
home_mailbox = Maildir/
defer_transports = smtp" bash "$PF" start "$PF_DIR")
fi

# the rounds alternate, so that a slow spell of the machine falls on both sides alike
fm_times=()
pf_times=()
for r in $(seq 1 "$ROUNDS"); do
  fm_round "$r"
  fm_times+=("$FM_S")
  if [[ $PEER -eq 1 ]]; then
    pf_round "$r"
    pf_times+=("$PF_S")
  fi
done
FM_MED=$(printf '%s\n' "${fm_times[@]}" | median)
echo "ferrymail: median $FM_MED s, $(rate "$FM_MED") messages/s over $ROUNDS round(s)"
if [[ $PEER -eq 1 ]]; then
  PF_MED=$(printf '%s\n' "${pf_times[@]}" | median)
  echo "postfix:   median $PF_MED s, $(rate "$PF_MED") messages/s over $ROUNDS round(s)"
  echo "ratio ferrymail/postfix: $(awk -v f="$FM_MED" -v p="$PF_MED" 'BEGIN { printf "%.2f", p / f }') (messages/s, medians; above 1 means ferrymail delivered faster)"
fi
