#!/usr/bin/env bash
# A private Postfix instance for the benchmarks, entirely inside one directory, listening on loopback.
#
#   bench/postfix-instance.sh start DIR    creates DIR/etc, DIR/queue, DIR/data, starts it, prints the port
#   bench/postfix-instance.sh queued DIR   waits until incoming/ and active/ drain, prints the message count
#   bench/postfix-instance.sh empty DIR    deletes every queued message
#   bench/postfix-instance.sh stop DIR     stops it (waits for every Postfix process of the instance)
#
# Postfix is configured as shipped except for what a private, non-delivering instance needs: its own
# config/queue/data directories, no chroot, smtpd on 127.0.0.1 and a free port, relaying for loopback
# clients, and nothing delivered (the smtp and local transports are deferred and the relay host is a
# closed loopback port). Queue files are fsynced before "250", as by default. Needs root and the
# postfix user; DIR's parents must be searchable by that user.
#
# POSTFIX_MAIN_EXTRA (environment, for start): more main.cf settings, one "name = value" a line, set with
# postconf -e over the ones above (the drain benchmark uses it to hold incoming mail and to relay to a
# sink).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[[ -n "$cmd" && -n "$dir" ]] || { sed -n '4,7p' "$0" >&2; exit 64; }
conf=$dir/etc
queue=$dir/queue

free_port() {
  node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{process.stdout.write(String(s.address().port));s.close()})"
}

case "$cmd" in
  start)
    [[ $(id -u) -eq 0 ]] || { echo "postfix-instance: needs root" >&2; exit 77; }
    command -v postfix >/dev/null && command -v postconf >/dev/null || { echo "postfix-instance: postfix not installed" >&2; exit 69; }
    id postfix >/dev/null 2>&1 || { echo "postfix-instance: no postfix user" >&2; exit 69; }
    mkdir -p "$conf" "$queue" "$dir/data"
    chown postfix "$dir/data"
    port=$(free_port)
    closed=$(free_port)
    cat >"$conf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $queue
data_directory = $dir/data
command_directory = $(postconf -dh command_directory)
daemon_directory = $(postconf -dh daemon_directory)
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.example
mydomain = bench.example
mydestination = bench.example
alias_maps =
alias_database =
local_recipient_maps =
relay_domains =
mynetworks = 127.0.0.0/8 [::1]/128
inet_interfaces = loopback-only
inet_protocols = ipv4
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:$closed
defer_transports = smtp local
queue_run_delay = 3600s
minimal_backoff_time = 3600s
maximal_backoff_time = 3600s
maillog_file_prefixes = $dir
maillog_file = $dir/maillog
biff = no
EOF
    if [[ -n "${POSTFIX_MAIN_EXTRA:-}" ]]; then
      while IFS= read -r line; do
        if [[ -n "$line" ]]; then postconf -c "$conf" -e "$line"; fi
      done <<<"$POSTFIX_MAIN_EXTRA"
    fi
    cat >"$conf/master.cf" <<EOF
127.0.0.1:$port inet n - n - - smtpd
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
local      unix  - n n -     - local
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF
    if ! postfix -c "$conf" check >"$dir/check.out" 2>&1; then
      echo "postfix-instance: postfix check failed" >&2; cat "$dir/check.out" >&2; tail -5 "$dir/maillog" >&2 2>/dev/null || true; exit 70
    fi
    if ! postfix -c "$conf" start >"$dir/start.out" 2>&1; then
      echo "postfix-instance: postfix did not start" >&2; cat "$dir/start.out" >&2; tail -5 "$dir/maillog" >&2 2>/dev/null || true; exit 70
    fi
    # wait until smtpd's port accepts connections (bounded: 15 s)
    if ! node -e "
        const net=require('net'); const end=Date.now()+15000;
        (function t(){ const s=net.connect($port,'127.0.0.1');
          s.once('connect',()=>{s.destroy();process.exit(0)});
          s.once('error',()=>{ if(Date.now()>end) process.exit(1); setTimeout(t,50); }); })();"; then
      echo "postfix-instance: no listener on port $port" >&2; tail -5 "$dir/maillog" >&2 || true; exit 70
    fi
    echo "$port"
    ;;
  queued)
    for _ in $(seq 1 600); do
      n=$(find "$queue/maildrop" "$queue/incoming" "$queue/active" -type f 2>/dev/null | wc -l)
      [[ $n -eq 0 ]] && break
      sleep 0.1
    done
    find "$queue/maildrop" "$queue/incoming" "$queue/active" "$queue/deferred" "$queue/hold" -type f 2>/dev/null | wc -l
    ;;
  empty)
    postsuper -c "$conf" -d ALL >/dev/null 2>&1 || true
    ;;
  stop)
    # "postfix stop" waits (bounded) for the master, and with it every process of the instance, to exit
    if postfix -c "$conf" status >/dev/null 2>&1; then postfix -c "$conf" stop >/dev/null 2>&1 || true; fi
    ;;
  *)
    sed -n '4,7p' "$0" >&2; exit 64 ;;
esac
