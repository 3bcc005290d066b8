#!/usr/bin/env bash
# SMTP intake benchmark: Postfix's smtp-source sends the same load to a fresh ferrymail daemon and to a
# private Postfix instance, both on loopback with their own temporary spool/queue, both durable (fsync
# before "250"). Prints messages per second for each and the ratio ferrymail/postfix, for one connection
# per message and for connection reuse (smtp-source -d).
#
# Usage: bench/intake.sh [-m messages] [-s sessions] [-l bytes] [-r repeats] [-p policy] [-L] [-S] [-k] [-n]
#   -m  messages per round (default 5000)
#   -s  parallel SMTP sessions (default 20)
#   -l  message payload in bytes, headers not included (default 2048)
#   -r  repeat each measurement this many times and report the median (default 1)
#   -p  policy mode: hooks (ferrymail: one in-process hook at every stage and a DNS list answered from its
#       cache; Postfix as it is), milter (both: OpenDKIM as a milter, signing every message), or all
#       (both of them); default: none. With a policy, each round also runs ferrymail without it, and the
#       results say what the policy costs.
#   -L  latency instead of rate: one connection sends the messages one after another (bench/latency.js),
#       and the time from the final "." to the 250 is printed as p50/p99 for each server
#   -S  system calls instead of rate: each server's calls per message under the same load (strace -f -c
#       attached to the daemon, and to Postfix's master and every process it has), for both rounds; a
#       count, unlike a rate, does not move with the machine's other load
#   -k  keep the temporary directory (logs, queues) for inspection
#   -n  ferrymail only (skip Postfix)
# FM_NODE_ARGS in the environment is given to the daemon's node (e.g. "--cpu-prof --cpu-prof-dir=DIR").
# Needs: node, a built tree (npm run build), smtp-source and postfix (Debian package postfix); root for
# the Postfix side (its master runs as root and drops to the postfix user).
set -euo pipefail

MESSAGES=5000
SESSIONS=20
SIZE=2048
REPEATS=1
KEEP=0
PEER=1
POLICY=none
LATENCY=0
SYSCALLS=0
while getopts 'm:s:l:r:p:LSkn' opt; do
  case "$opt" in
    m) MESSAGES=$OPTARG ;;
    s) SESSIONS=$OPTARG ;;
    l) SIZE=$OPTARG ;;
    r) REPEATS=$OPTARG ;;
    p) POLICY=$OPTARG ;;
    L) LATENCY=1 ;;
    S) SYSCALLS=1 ;;
    k) KEEP=1 ;;
    n) PEER=0 ;;
    *) sed -n '2,23p' "$0" >&2; exit 64 ;;
  esac
done
[[ $POLICY =~ ^(none|hooks|milter|all)$ ]] || { echo "intake: -p takes none, hooks, milter or all" >&2; exit 64; }
for v in "$MESSAGES" "$SESSIONS" "$SIZE" "$REPEATS"; do
  [[ "$v" =~ ^[0-9]+$ && "$v" -gt 0 ]] || { echo "intake: numbers must be positive integers" >&2; exit 64; }
done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
NODE=$(command -v node) || { echo "intake: node not found" >&2; exit 69; }
[[ -f "$ROOT/dist/src/cli/ferrymail-main.js" ]] || { echo "intake: run 'npm run build' first" >&2; exit 69; }
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

SMTP_SOURCE=$(find_tool smtp-source "${SMTP_SOURCE:-}") || { echo "intake: smtp-source not found (Debian: apt-get install postfix)" >&2; exit 69; }
if [[ $SYSCALLS -eq 1 ]]; then
  command -v strace >/dev/null || { echo "intake: -S needs strace (Debian: apt-get install strace)" >&2; exit 69; }
fi

if [[ $PEER -eq 1 ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "intake: the private Postfix instance needs root; run as root or pass -n (ferrymail only)" >&2; exit 77
  fi
  command -v postfix >/dev/null && command -v postconf >/dev/null || { echo "intake: postfix not installed" >&2; exit 69; }
  id postfix >/dev/null 2>&1 || { echo "intake: no postfix user" >&2; exit 69; }
fi

WORK=$(mktemp -d -t ferrymail-bench-intake.XXXXXX)
chmod 755 "$WORK" # the postfix user must reach the queue and data directories below it
DAEMON_PID=''
PF_CONF=''
HELPERS=()

cleanup() {
  set +e
  if [[ -n "$DAEMON_PID" ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill "$DAEMON_PID"
    for _ in $(seq 1 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$DAEMON_PID" 2>/dev/null
  fi
  [[ -n "$PF_CONF" ]] && bash "$PF" stop "$PF_DIR"
  for p in "${HELPERS[@]}"; do kill "$p" 2>/dev/null; done
  if [[ $KEEP -eq 1 ]]; then echo "kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# user+system CPU seconds a process has used so far
daemon_cpu() {
  awk -v hz="$HZ" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"
}


# --- policy: the hooks, a DNS list, OpenDKIM --------------------------------------------------------
HOOKS_YAML=''
PF_EXTRA=''
if [[ $POLICY == hooks || $POLICY == all ]]; then
  # one hook at every stage that only says "go on": the cost of asking, not of deciding
  cat >"$WORK/every-stage.js" <<'EOF'
const go = { action: 'continue' };
export default () => ({
  connect: () => go, helo: () => go, mail: () => go, rcpt: () => go, data: () => go,
  data_end: () => go, other: () => go, queued: () => undefined,
});
EOF
  chmod 644 "$WORK/every-stage.js"
  DNSMASQ=$(find_tool dnsmasq "${DNSMASQ:-}") || { echo "intake: dnsmasq not found (Debian: apt-get install dnsmasq-base)" >&2; exit 69; }
  DNS_PORT=$(free_port)
  "$DNSMASQ" -k --no-resolv --no-hosts --port="$DNS_PORT" --listen-address=127.0.0.1 --bind-interfaces --user= --pid-file= \
    --address=/bl.bench/ >"$WORK/dnsmasq.log" 2>&1 &
  HELPERS+=($!)
  HOOKS_YAML+="dns:
  servers: [\"127.0.0.1:$DNS_PORT\"]
hooks:
  - path: $WORK/every-stage.js
  - builtin: dnsbl
    options: { zones: [bl.bench] }
"
fi
if [[ $POLICY == milter || $POLICY == all ]]; then
  OPENDKIM=$(find_tool opendkim "${OPENDKIM:-}") || { echo "intake: opendkim not found (Debian: apt-get install opendkim)" >&2; exit 69; }
  mkdir -p "$WORK/dkim" && chmod 755 "$WORK/dkim"
  openssl genrsa -out "$WORK/dkim/sel.private" 2048 2>/dev/null
  chmod 600 "$WORK/dkim/sel.private"
  MILTER_PORT=$(free_port)
  printf '%s\n' 'Syslog no' 'Background no' 'Mode s' 'Domain bench.client' 'Selector sel' \
    "KeyFile $WORK/dkim/sel.private" "Socket inet:$MILTER_PORT@127.0.0.1" 'InternalHosts 127.0.0.1' \
    "PidFile $WORK/dkim/opendkim.pid" 'RequireSafeKeys no' >"$WORK/dkim/opendkim.conf"
  "$OPENDKIM" -f -x "$WORK/dkim/opendkim.conf" >"$WORK/dkim/opendkim.log" 2>&1 &
  HELPERS+=($!)
  wait_port "$MILTER_PORT" || { echo "intake: opendkim did not start" >&2; cat "$WORK/dkim/opendkim.log" >&2; exit 70; }
  [[ -n $HOOKS_YAML ]] || HOOKS_YAML='hooks:
'
  HOOKS_YAML+="  - builtin: milter
    options: { server: \"inet:127.0.0.1:$MILTER_PORT\" }
"
  PF_EXTRA="smtpd_milters = inet:127.0.0.1:$MILTER_PORT
milter_default_action = tempfail"
fi

# --- ferrymail --------------------------------------------------------------------------------------
# Connection limits are raised so that they can never throttle the benchmark, whatever the timing of
# smtp-source's reconnects.
FM_LIMIT=$(( SESSIONS * 2 + 10 ))
FM_TOTAL=$(( FM_LIMIT > 100 ? FM_LIMIT : 100 ))

start_ferrymail() { # $1: directory for this run, $2: the policy's settings ("" for none)
  local dir=$1 policy=$2 port
  mkdir -p "$dir"
  port=$(free_port)
  cat >"$dir/ferrymail.yaml" <<EOF
hostname: bench.example
listen: ["127.0.0.1:$port"]
spool: $dir/spool
limits:
  connections: $FM_TOTAL
  connections_per_client: $FM_LIMIT
$policy
EOF
  # shellcheck disable=SC2086
  "$NODE" ${FM_NODE_ARGS:-} "$ROOT/bin/ferrymail.js" --config-dir "$dir" daemon >"$dir/daemon.log" 2>&1 &
  DAEMON_PID=$!
  wait_port "$port" || { echo "intake: ferrymail did not start:" >&2; cat "$dir/daemon.log" >&2; exit 70; }
  FM_PORT=$port
}

stop_ferrymail() {
  kill "$DAEMON_PID"
  for _ in $(seq 1 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
  wait "$DAEMON_PID" 2>/dev/null || true
  DAEMON_PID=''
}

# --- Postfix ---------------------------------------------------------------------------------------
PF=$HERE/postfix-instance.sh
PF_DIR=$WORK/postfix
setup_postfix() {
  mkdir -p "$PF_DIR"
  PF_CONF=$PF_DIR/etc # from here on, cleanup stops the instance
  PF_PORT=$(POSTFIX_MAIN_EXTRA="$PF_EXTRA" bash "$PF" start "$PF_DIR")
}
postfix_queued() { bash "$PF" queued "$PF_DIR"; }

# --- the load ---------------------------------------------------------------------------------------
# prints elapsed seconds; $1: port, $2: "" or -d
send_load() {
  local port=$1 reuse=$2 t0 t1 out
  out=$WORK/smtp-source.out
  t0=$(now_ns)
  # shellcheck disable=SC2086
  if ! "$SMTP_SOURCE" $reuse -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -M bench.client \
      -f sender@bench.client -t rcpt@remote.example "127.0.0.1:$port" >"$out" 2>&1; then
    echo "intake: smtp-source failed against port $port:" >&2; cat "$out" >&2; return 1
  fi
  t1=$(now_ns)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'
}

per_msg_us() { awk -v n="$MESSAGES" -v s="$1" 'BEGIN { printf "%.0f", s * 1e6 / n }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.0f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "ferrymail intake benchmark: $MESSAGES messages of $SIZE bytes payload, $SESSIONS sessions, $REPEATS repeat(s), policy: $POLICY"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), CPU busy before start $(cpu_busy), node $("$NODE" --version)$([[ $PEER -eq 1 ]] && echo ", postfix $(postconf -dh mail_version)")"
if rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
  git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || rev="$rev with local changes in src/"
  echo "ferrymail: $rev (the built dist/ is what runs)"
fi
echo "smtp-source: $SMTP_SOURCE"
[[ $PEER -eq 1 ]] && setup_postfix

# prints "TOTAL NAME=N NAME=N ..." per message (the eight most frequent) for the load sent to port $1
# ("" or -d in $2) while strace counts the calls of the processes $3... and of every thread and child
trace_load() {
  local port=$1 flag=$2 out sp
  shift 2
  out=$(mktemp "$WORK/strace.XXXXXX")
  local args=()
  for p in "$@"; do args+=(-p "$p"); done
  strace -f -c -o "$out" "${args[@]}" 2>"$out.err" &
  sp=$!
  # counting starts once strace has said, for each process, that it is attached
  for _ in $(seq 1 200); do
    [[ $(grep -c 'attached' "$out.err" || true) -ge $# ]] && break
    sleep 0.05
  done
  send_load "$port" "$flag" >/dev/null
  kill -INT "$sp"
  wait "$sp" || true
  awk -v n="$MESSAGES" '
    $NF == "total" { total = $4 }
    $1 ~ /^[0-9.]+$/ && $NF != "total" { calls[$NF] = $4 }
    END {
      printf "%.1f", total / n
      k = 0
      while (k < 8) {
        best = ""; for (c in calls) if (best == "" || calls[c] > calls[best]) best = c
        if (best == "") break
        printf " %s=%.1f", best, calls[best] / n; delete calls[best]; k++
      }
      print ""
    }' "$out"
}

if [[ $SYSCALLS -eq 1 ]]; then
  echo "system calls per message (strace -f -c; the eight most frequent)"
  for mode in new reuse; do
    flag=''; [[ $mode == reuse ]] && flag='-d'
    start_ferrymail "$WORK/syscalls-$mode" "$HOOKS_YAML"
    read -r total top < <(trace_load "$FM_PORT" "$flag" "$DAEMON_PID")
    stop_ferrymail
    printf '  %-6s ferrymail %7s   %s\n' "$mode" "$total" "$top"
    if [[ $PEER -eq 1 ]]; then
      master=$(tr -d ' \n' <"$PF_DIR/queue/pid/master.pid")
      read -r total top < <(trace_load "$PF_PORT" "$flag" "$master" $(pgrep -P "$master"))
      printf '  %-6s postfix   %7s   %s\n' "$mode" "$total" "$top"
    fi
  done
  exit 0
fi

if [[ $LATENCY -eq 1 ]]; then
  # "." -> 250 on one connection, each round beside Postfix's
  fm_p50=(); fm_p99=(); pf_p50=(); pf_p99=()
  for rep in $(seq 1 "$REPEATS"); do
    start_ferrymail "$WORK/latency-$rep" "$HOOKS_YAML"
    read -r p50 p99 mean n < <("$NODE" "$HERE/latency.js" "$FM_PORT" "$MESSAGES" "$SIZE")
    stop_ferrymail
    fm_p50+=("$p50"); fm_p99+=("$p99")
    printf '  run %d  ferrymail p50 %7s ms  p99 %7s ms (%d messages)' "$rep" "$p50" "$p99" "$n"
    if [[ $PEER -eq 1 ]]; then
      read -r p50 p99 mean n < <("$NODE" "$HERE/latency.js" "$PF_PORT" "$MESSAGES" "$SIZE")
      pf_p50+=("$p50"); pf_p99+=("$p99")
      printf '   postfix p50 %7s ms  p99 %7s ms' "$p50" "$p99"
    fi
    echo
  done
  mid() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
  echo
  echo "\".\" -> 250 on one connection (median of the rounds, ms)   ferrymail   postfix   ferrymail/postfix"
  for q in p50 p99; do
    eval "fm=\$(mid \"\${fm_$q[@]}\")"
    if [[ $PEER -eq 1 ]]; then
      eval "pf=\$(mid \"\${pf_$q[@]}\")"
      printf '  %-50s %9s %9s %12s\n' "$q" "$fm" "$pf" "$(awk -v a="$fm" -v b="$pf" 'BEGIN { printf "%.2f", a / b }')"
    else
      printf '  %-50s %9s %9s %12s\n' "$q" "$fm" '-' '-'
    fi
  done
  echo "target: ferrymail p50 <= postfix p50"
  exit 0
fi

# Spools and queues are removed only at the end: on some file systems (ext4 without a journal) creating
# a file costs much more CPU for a while after many files were deleted nearby.
declare -A RESULT
run=0
pf_total=0
for mode in new reuse; do
  flag=''; [[ $mode == reuse ]] && flag='-d'
  fm_rates=(); fm0_rates=(); pf_rates=(); fm_cpus=(); fm0_cpus=(); pf_cpus=()
  for rep in $(seq 1 "$REPEATS"); do
    run=$((run + 1))
    dir=$WORK/ferrymail-$run
    bare=''
    if [[ $POLICY != none ]]; then
      # the same daemon without the policy, in the same round: what the policy costs
      start_ferrymail "$dir-bare" ''
      cpu0=$(daemon_cpu "$DAEMON_PID")
      secs=$(send_load "$FM_PORT" "$flag")
      cpu=$(awk -v a="$cpu0" -v b="$(daemon_cpu "$DAEMON_PID")" 'BEGIN { printf "%.2f", b - a }')
      stop_ferrymail
      bare=$(rate "$secs"); fm0_rates+=("$bare"); fm0_cpus+=("$(per_msg_us "$cpu")")
    fi
    start_ferrymail "$dir" "$HOOKS_YAML"
    load=$(cut -d' ' -f1 /proc/loadavg)
    cpu0=$(daemon_cpu "$DAEMON_PID")
    secs=$(send_load "$FM_PORT" "$flag")
    cpu=$(awk -v a="$cpu0" -v b="$(daemon_cpu "$DAEMON_PID")" 'BEGIN { printf "%.2f", b - a }')
    stop_ferrymail
    got=$(find "$dir/spool/queue" -type f | wc -l)
    [[ $got -eq $MESSAGES ]] || { echo "intake: ferrymail queued $got of $MESSAGES" >&2; exit 70; }
    r=$(rate "$secs"); fm_rates+=("$r"); fm_cpus+=("$(per_msg_us "$cpu")")
    printf '  %-6s run %d  (load %5s)  ferrymail %7.3f s %6s msg/s (CPU %5.2f s)' "$mode" "$rep" "$load" "$secs" "$r" "$cpu"
    [[ -n $bare ]] && printf ' [without the policy %6s msg/s]' "$bare"
    if [[ $PEER -eq 1 ]]; then
      cpu0=$(postfix_cpu)
      secs=$(send_load "$PF_PORT" "$flag")
      got=$(postfix_queued)
      cpu=$(awk -v a="$cpu0" -v b="$(postfix_cpu)" 'BEGIN { printf "%.2f", b - a }')
      pf_total=$((pf_total + MESSAGES))
      [[ $got -eq $pf_total ]] || { echo; echo "intake: postfix holds $got messages, expected $pf_total" >&2; exit 70; }
      r=$(rate "$secs"); pf_rates+=("$r"); pf_cpus+=("$(per_msg_us "$cpu")")
      printf '   postfix %7.3f s %6s msg/s (CPU %5.2f s)' "$secs" "$r" "$cpu"
    fi
    echo
  done
  RESULT[$mode-fm]=$(median "${fm_rates[@]}")
  RESULT[$mode-fm-cpu]=$(median "${fm_cpus[@]}")
  if [[ $POLICY != none ]]; then
    RESULT[$mode-fm0]=$(median "${fm0_rates[@]}")
    RESULT[$mode-fm0-cpu]=$(median "${fm0_cpus[@]}")
  fi
  if [[ $PEER -eq 1 ]]; then
    RESULT[$mode-pf]=$(median "${pf_rates[@]}")
    RESULT[$mode-pf-cpu]=$(median "${pf_cpus[@]}")
  fi
done

echo
echo "results (median msg/s)            ferrymail   postfix   ferrymail/postfix"
for mode in new reuse; do
  label='one connection per message'; [[ $mode == reuse ]] && label='connection reuse (-d)'
  fm=${RESULT[$mode-fm]}
  if [[ $PEER -eq 1 ]]; then
    pf=${RESULT[$mode-pf]}
    printf '  %-30s %9s %9s %12s\n' "$label" "$fm" "$pf" "$(awk -v a="$fm" -v b="$pf" 'BEGIN { printf "%.2f", a / b }')"
  else
    printf '  %-30s %9s %9s %12s\n' "$label" "$fm" '-' '-'
  fi
done
if [[ $POLICY != none ]]; then
  echo
  echo "ferrymail without the policy in the same rounds, and what the policy costs (medians)"
  echo "                                     msg/s    change    CPU/msg us    change"
  for mode in new reuse; do
    label='one connection per message'; [[ $mode == reuse ]] && label='connection reuse (-d)'
    printf '  %-30s %9s %9s %13s %9s\n' "$label" "${RESULT[$mode-fm0]}" \
      "$(awk -v a="${RESULT[$mode-fm]}" -v b="${RESULT[$mode-fm0]}" 'BEGIN { printf "%+.1f%%", (a / b - 1) * 100 }')" \
      "${RESULT[$mode-fm0-cpu]}" \
      "$(awk -v a="${RESULT[$mode-fm-cpu]}" -v b="${RESULT[$mode-fm0-cpu]}" 'BEGIN { printf "%+.1f%%", (a / b - 1) * 100 }')"
  done
fi
echo
echo "server CPU per message (median, microseconds; smtp-source not included)"
for mode in new reuse; do
  label='one connection per message'; [[ $mode == reuse ]] && label='connection reuse (-d)'
  printf '  %-30s %9s %9s\n' "$label" "${RESULT[$mode-fm-cpu]}" "${RESULT[$mode-pf-cpu]:--}"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "target: ferrymail/postfix >= 1.0 (aim 1.5)"
