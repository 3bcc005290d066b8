# Shell helpers shared by the benchmarks (sourced, not run). Needs NODE set to the node binary.

# A Postfix test tool (smtp-sink, smtp-source): $2 when given, else on PATH, else in Postfix's command or
# daemon directory (Debian keeps them in the command directory, others in the daemon directory).
find_tool() { # $1: name, $2: override
  local d
  if [[ -n "$2" ]]; then echo "$2"; return 0; fi
  if command -v "$1"; then return 0; fi
  if command -v postconf >/dev/null; then
    for d in "$(postconf -dh command_directory)" "$(postconf -dh daemon_directory)"; do
      [[ -x "$d/$1" ]] && { echo "$d/$1"; return 0; }
    done
  fi
  return 1
}

# a free TCP port on 127.0.0.1
free_port() {
  "$NODE" -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{process.stdout.write(String(s.address().port));s.close()})"
}

# waits until 127.0.0.1:$1 accepts a connection (bounded: 15 s)
wait_port() {
  "$NODE" -e "
    const net=require('net'); const end=Date.now()+15000;
    (function t(){ const s=net.connect($1,'127.0.0.1');
      s.once('connect',()=>{s.destroy();process.exit(0)});
      s.once('error',()=>{ if(Date.now()>end) process.exit(1); setTimeout(t,50); }); })();"
}

now_ns() { date +%s%N; }

# share of the machine's CPU time busy over one second (other work running beside the benchmark)
cpu_busy() {
  local a b
  a=$(awk '/^cpu /{ print $2+$3+$4+$7+$8+$9, $5+$6 }' /proc/stat)
  sleep 1
  b=$(awk '/^cpu /{ print $2+$3+$4+$7+$8+$9, $5+$6 }' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); busy = y[1] - x[1]; idle = y[2] - x[2]; printf "%.0f%%", 100 * busy / (busy + idle) }'
}

HZ=$(getconf CLK_TCK)

# seconds between two now_ns readings
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
# messages per second and CPU milliseconds per message for $MESSAGES messages in $1 seconds
rate() { awk -v n="$MESSAGES" -v s="$1" 'BEGIN { printf "%.0f", n / s }'; }
per_msg_ms() { awk -v n="$MESSAGES" -v s="$1" 'BEGIN { printf "%.2f", s * 1000 / n }'; }

# user+system CPU seconds of the children this shell has waited for, from a file bash's `times` wrote
# (second line; `times` must run in this shell itself, a subshell has children of its own)
children_cpu() {
  awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); sub(/s$/, "", p[2]); t += p[1] * 60 + p[2] } printf "%.2f", t }' "$1"
}

# user+system CPU seconds of the Postfix instance in $PF_DIR so far: the master, the children it has
# reaped, and the children still running
postfix_cpu() {
  local master
  master=$(tr -d ' \n' <"$PF_DIR/queue/pid/master.pid")
  # processes may exit while they are read: cat then fails, which is fine
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v hz="$HZ" -v m="$master" '
    { pid = $1; sub(/^.*\) /, "") }
    pid == m { t += $12 + $13 + $14 + $15 }
    $2 == m { t += $12 + $13 + $14 + $15 }
    END { printf "%.2f", t / hz }'
}

# releases everything the Postfix instance ($PF_CONF, $PF_DIR) holds and waits (at most $LIMIT seconds)
# until its queue is empty; sets PF_S (wall seconds) and PF_CPU (the instance's CPU seconds). $1 names
# the benchmark in the error message.
postfix_release() {
  local cpu0 cpu1 t0 t1 n deadline
  cpu0=$(postfix_cpu)
  t0=$(now_ns)
  postsuper -c "$PF_CONF" -H ALL 2>/dev/null
  postqueue -c "$PF_CONF" -f
  deadline=$(( $(date +%s) + LIMIT ))
  while :; do
    n=$(find "$PF_DIR/queue/maildrop" "$PF_DIR/queue/incoming" "$PF_DIR/queue/active" "$PF_DIR/queue/deferred" "$PF_DIR/queue/hold" -type f 2>/dev/null | wc -l)
    [[ $n -eq 0 ]] && break
    if [[ $(date +%s) -ge $deadline ]]; then echo "$1: Postfix still has $n messages after ${LIMIT}s" >&2; exit 70; fi
    sleep 0.05
  done
  t1=$(now_ns)
  cpu1=$(postfix_cpu)
  PF_S=$(secs "$t0" "$t1")
  PF_CPU=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.2f", b - a }')
}
