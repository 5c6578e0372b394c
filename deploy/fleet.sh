#!/usr/bin/env bash
# A fleet of `plugformer serve` replicas on loopback behind nginx (least_conn, failover retries,
# unbuffered SSE). Everything (pids, ports, logs, nginx config and temp files) lives in one work dir.
#
#   deploy/fleet.sh start --replicas N --model DIR [--port P] [--host H] [--plugformer BIN]
#                         [--workdir D] [--nginx BIN] [--fail-timeout T] [--read-timeout T]
#                         [--start-timeout S] [-- <extra `plugformer serve` options>]
#   deploy/fleet.sh stop   [--workdir D] [--grace S]
#   deploy/fleet.sh status [--workdir D]
#
# start: launches N `plugformer serve DIR --host 127.0.0.1 --port 0` replicas, waits for each
#   one's listening line and /health, then nginx (`nginx -p D -c D/nginx.conf`, not the system
#   service, as the current user) on H:P (default 127.0.0.1:8080; --port 0 picks a free port).
#   Writes D/replicas.tsv (index pid port url), D/replica-<i>.{pid,port,log}, D/nginx.port and
#   D/fleet.env (FLEET_URL=..., FLEET_PORT=..., FLEET_NGINX_PID=...). Prints FLEET_URL last.
# stop: nginx first (graceful QUIT), then SIGTERM to the replicas (they finish their running
#   requests), SIGKILL after --grace seconds (default 30).
# status: the replicas and nginx, alive or not, and each replica's /health.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
template="$here/nginx.conf.template"

die() { echo "fleet.sh: $*" >&2; exit 1; }
log() { echo "fleet.sh: $*" >&2; }

usage() { sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

[ $# -ge 1 ] || { usage >&2; exit 2; }
cmd="$1"; shift

replicas=""
model=""
port=8080
host=127.0.0.1
plugformer="${PLUGFORMER_BIN:-}"
workdir="$PWD/plugformer-fleet"
nginx_bin="${NGINX:-/usr/sbin/nginx}"
fail_timeout=10s
read_timeout=3600s
start_timeout=180
grace=30
serve_extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) replicas="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --host) host="$2"; shift 2 ;;
    --plugformer) plugformer="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --nginx) nginx_bin="$2"; shift 2 ;;
    --fail-timeout) fail_timeout="$2"; shift 2 ;;
    --read-timeout) read_timeout="$2"; shift 2 ;;
    --start-timeout) start_timeout="$2"; shift 2 ;;
    --grace) grace="$2"; shift 2 ;;
    --) shift; serve_extra=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done

# A recorded pid is only ours while it still runs the program we started (pids get reused).
pid_runs() {  # pid name
  local pid="$1" name="$2"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name"
}

# Running, not a zombie its new parent has yet to reap.
alive() { local state; state="$(ps -o stat= -p "$1" 2>/dev/null)" && [ -n "$state" ] && [ "${state:0:1}" != Z ]; }

wait_gone() {  # pid seconds
  local pid="$1" deadline=$((SECONDS + $2))
  while alive "$pid"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

do_stop() {
  [ -d "$workdir" ] || { log "no work dir $workdir"; return 0; }
  local pid
  if [ -f "$workdir/nginx.pid" ]; then
    pid="$(cat "$workdir/nginx.pid" 2>/dev/null || true)"
    if pid_runs "$pid" nginx; then
      kill -QUIT "$pid" 2>/dev/null || true
      wait_gone "$pid" 10 || { kill -TERM "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true; }
    fi
    rm -f "$workdir/nginx.pid"
  fi
  local f pids=()
  for f in "$workdir"/replica-*.pid; do
    [ -e "$f" ] || continue
    pid="$(cat "$f")"
    if pid_runs "$pid" serve; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for pid in "${pids[@]}"; do
    if ! wait_gone "$pid" "$grace"; then
      log "replica pid $pid still running ${grace}s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" 5 || true
    fi
  done
  rm -f "$workdir"/replica-*.pid
  log "stopped (work dir $workdir)"
}

do_status() {
  [ -f "$workdir/replicas.tsv" ] || die "no fleet in $workdir"
  local i pid rport url state health
  while read -r i pid rport url; do
    [ "$i" = index ] && continue
    if pid_runs "$pid" serve; then state=running; else state=dead; fi
    health="$(curl -s --noproxy '*' --max-time 5 -o /dev/null -w '%{http_code}' "$url/health" || true)"
    echo "replica $i pid $pid $url $state health=$health"
  done <"$workdir/replicas.tsv"
  pid="$(cat "$workdir/nginx.pid" 2>/dev/null || true)"
  if pid_runs "$pid" nginx; then state=running; else state=dead; fi
  echo "nginx pid ${pid:-?} http://$host:$(cat "$workdir/nginx.port" 2>/dev/null || echo '?') $state"
}

start_replica() {  # index
  local i="$1" logf="$workdir/replica-$1.log"
  nohup "$plugformer" serve "$model" --host 127.0.0.1 --port 0 "${serve_extra[@]}" \
    </dev/null >"$logf" 2>&1 &
  echo $! >"$workdir/replica-$i.pid"
}

wait_replica() {  # index -> prints port
  local i="$1" logf="$workdir/replica-$1.log" pid line deadline=$((SECONDS + start_timeout))
  pid="$(cat "$workdir/replica-$i.pid")"
  while :; do
    line="$(grep -m1 -E '^plugformer serve: listening on http://[^ ]+:[0-9]+$' "$logf" || true)"
    [ -n "$line" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      log "replica $i (pid $pid) exited before listening; its log:"; tail -n 20 "$logf" >&2; return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "replica $i (pid $pid) not listening after ${start_timeout}s; its log:"; tail -n 20 "$logf" >&2; return 1
    fi
    sleep 0.1
  done
  local rport="${line##*:}"
  while [ "$(curl -s --noproxy '*' --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$rport/health" || true)" != 200 ]; do
    [ $SECONDS -lt $deadline ] || { log "replica $i: GET /health is not 200 after ${start_timeout}s"; return 1; }
    kill -0 "$pid" 2>/dev/null || { log "replica $i exited"; tail -n 20 "$logf" >&2; return 1; }
    sleep 0.2
  done
  echo "$rport"
}

write_nginx_conf() {  # listen-port
  local conf user_directive="" servers="" i rport
  if [ "$(id -u)" -eq 0 ]; then user_directive="user $(id -un) $(id -gn);"; fi
  for i in $(seq 1 "$replicas"); do
    rport="$(cat "$workdir/replica-$i.port")"
    servers+="    server 127.0.0.1:$rport max_fails=1 fail_timeout=$fail_timeout;"$'\n'
  done
  conf="$(cat "$template")"
  conf="${conf//@USER_DIRECTIVE@/$user_directive}"
  conf="${conf//@WORKDIR@/$workdir}"
  conf="${conf//@LISTEN@/$host:$1}"
  conf="${conf//@UPSTREAM_SERVERS@/${servers%$'\n'}}"
  conf="${conf//@READ_TIMEOUT@/$read_timeout}"
  printf '%s\n' "$conf" >"$workdir/nginx.conf"
}

start_nginx() {  # listen-port; 0 on success, 2 when the port is taken
  local out
  write_nginx_conf "$1"
  out="$("$nginx_bin" -p "$workdir" -c "$workdir/nginx.conf" -e "$workdir/nginx-error.log" 2>&1)" && return 0
  if grep -q 'Address already in use' <<<"$out"; then return 2; fi
  echo "$out" >&2
  return 1
}

fail_start() {
  log "$1; stopping what was started"
  do_stop
  exit 1
}

do_start() {
  [ -n "$replicas" ] && [ "$replicas" -ge 1 ] 2>/dev/null || die "--replicas N (N >= 1) is required"
  [ -n "$model" ] || die "--model DIR is required"
  [ -d "$model" ] || die "no model directory $model"
  if [ -z "$plugformer" ]; then
    if [ -x "$here/../build/bin/plugformer" ]; then plugformer="$here/../build/bin/plugformer"
    else plugformer="$(command -v plugformer || true)"; fi
  fi
  [ -n "$plugformer" ] && [ -x "$plugformer" ] || die "no plugformer binary (--plugformer BIN)"
  [ -x "$nginx_bin" ] || die "no nginx at $nginx_bin (Debian: apt-get install nginx; or --nginx BIN)"
  command -v curl >/dev/null || die "curl is required"
  [ -f "$template" ] || die "missing $template"

  mkdir -p "$workdir"
  workdir="$(cd "$workdir" && pwd)"
  if pid_runs "$(cat "$workdir/nginx.pid" 2>/dev/null || true)" nginx; then
    die "a fleet already runs in $workdir (deploy/fleet.sh stop --workdir $workdir)"
  fi
  local f
  for f in "$workdir"/replica-*.pid; do
    [ -e "$f" ] && pid_runs "$(cat "$f")" serve && die "a replica already runs in $workdir ($f)"
  done
  rm -f "$workdir"/replica-* "$workdir"/replicas.tsv "$workdir"/nginx.* "$workdir"/nginx-*.log "$workdir"/fleet.env
  mkdir -p "$workdir/tmp"

  local i rport
  for i in $(seq 1 "$replicas"); do start_replica "$i"; done
  printf 'index\tpid\tport\turl\n' >"$workdir/replicas.tsv"
  for i in $(seq 1 "$replicas"); do
    rport="$(wait_replica "$i")" || fail_start "replica $i did not come up"
    echo "$rport" >"$workdir/replica-$i.port"
    printf '%s\t%s\t%s\t%s\n' "$i" "$(cat "$workdir/replica-$i.pid")" "$rport" "http://127.0.0.1:$rport" >>"$workdir/replicas.tsv"
  done

  local listen_port="$port" tries=0 rc
  while :; do
    if [ "$port" = 0 ]; then listen_port=$((20000 + RANDOM % 40000)); fi
    rc=0; start_nginx "$listen_port" || rc=$?
    [ $rc -eq 0 ] && break
    if [ $rc -eq 2 ] && [ "$port" = 0 ] && [ $((tries += 1)) -lt 50 ]; then continue; fi
    [ $rc -eq 2 ] && fail_start "port $listen_port is in use"
    fail_start "nginx did not start (see $workdir/nginx-error.log)"
  done
  echo "$listen_port" >"$workdir/nginx.port"
  local deadline=$((SECONDS + 10))
  until [ -s "$workdir/nginx.pid" ]; do
    [ $SECONDS -lt $deadline ] || fail_start "nginx wrote no pid file"
    sleep 0.1
  done
  local url="http://$host:$listen_port"
  [ "$host" = 0.0.0.0 ] && url="http://127.0.0.1:$listen_port"
  until [ "$(curl -s --noproxy '*' --max-time 5 -o /dev/null -w '%{http_code}' "$url/health" || true)" = 200 ]; do
    [ $SECONDS -lt $deadline ] || fail_start "GET $url/health through nginx is not 200"
    sleep 0.1
  done
  {
    echo "FLEET_URL=$url"
    echo "FLEET_PORT=$listen_port"
    echo "FLEET_NGINX_PID=$(cat "$workdir/nginx.pid")"
    echo "FLEET_WORKDIR=$workdir"
  } >"$workdir/fleet.env"
  log "$replicas replica(s) on port(s) $(cut -f3 "$workdir/replicas.tsv" | tail -n +2 | paste -sd' ') behind nginx on $url (work dir $workdir)"
  echo "$url"
}

case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
