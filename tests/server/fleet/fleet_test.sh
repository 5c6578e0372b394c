#!/usr/bin/env bash
# Fleet test: deploy/fleet.sh starts 2 `plugformer serve` replicas of stories260K + nginx on loopback.
#   1. 20 completions through nginx (5 at a time): all 200, and each replica's GET /metrics shows it
#      served some (plugformer_requests_total{endpoint="/v1/completions",status="200"}), 20 in all.
#   2. A streamed completion through nginx keeps its SSE framing (`data: ...` events, `data: [DONE]`).
#   3. Two loops of non-streamed completions run while replica 1 gets kill -9: every request still
#      answers 200 (nginx replays it on replica 2: proxy_next_upstream ... non_idempotent).
#   4. `fleet.sh stop` leaves no process behind.
# The fleet is always stopped on exit (trap).
#
#   fleet_test.sh --plugformer BIN [--model DIR] [--workdir DIR] [--nginx BIN]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source_dir="$(cd "$here/../../.." && pwd)"
fleet="$source_dir/deploy/fleet.sh"

bin="${PLUGFORMER_BIN:-$source_dir/build/bin/plugformer}"
model="$source_dir/models/stories260K"
workdir=""
nginx_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --plugformer) bin="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --nginx) nginx_args=(--nginx "$2"); shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$workdir" ] || workdir="$(mktemp -d "${TMPDIR:-/tmp}/plugformer-fleet-test.XXXXXX")"
model_name="$(basename "$model")"
unset PLUGFORMER_API_KEY  # serve would require it

fail() { echo "FAIL: $*" >&2; exit 1; }
# Running, not a zombie its new parent has yet to reap.
alive() { local state; state="$(ps -o stat= -p "$1" 2>/dev/null)" && [ -n "$state" ] && [ "${state:0:1}" != Z ]; }
info() { echo "-- $*"; }

loop_pids=()
cleanup() {
  local rc=$?
  trap - EXIT
  for p in "${loop_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ $rc -ne 0 ] && [ -d "$workdir" ]; then
    for f in "$workdir"/replica-*.log "$workdir"/nginx-error.log; do
      [ -f "$f" ] || continue
      echo "--- tail of $f" >&2
      tail -n 25 "$f" >&2
    done
  fi
  "$fleet" stop --workdir "$workdir" --grace 10 >/dev/null 2>&1 || true
  [ $rc -eq 0 ] && echo "PASS" || echo "FAILED (work dir kept: $workdir)" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# Leftovers of an interrupted earlier run in the same work dir.
"$fleet" stop --workdir "$workdir" >/dev/null 2>&1 || true
rm -rf "$workdir"
mkdir -p "$workdir"

info "starting 2 replicas + nginx (work dir $workdir)"
url="$("$fleet" start --replicas 2 --model "$model" --port 0 --plugformer "$bin" --workdir "$workdir" \
  --fail-timeout 30s --start-timeout 120 "${nginx_args[@]}")" || fail "fleet.sh start failed"
# shellcheck disable=SC1091
source "$workdir/fleet.env"
[ "$url" = "$FLEET_URL" ] || fail "fleet.sh printed $url, fleet.env says $FLEET_URL"
mapfile -t replica_pids < <(tail -n +2 "$workdir/replicas.tsv" | cut -f2)
mapfile -t replica_ports < <(tail -n +2 "$workdir/replicas.tsv" | cut -f3)
[ ${#replica_pids[@]} -eq 2 ] || fail "replicas.tsv lists ${#replica_pids[@]} replicas, want 2"
[ "${replica_ports[0]}" != "${replica_ports[1]}" ] || fail "both replicas on port ${replica_ports[0]}"
info "nginx $FLEET_URL -> replicas on ${replica_ports[*]}"

completion='{"model":"'"$model_name"'","prompt":"Once upon a time","max_tokens":16,"temperature":0}'

# post <route> <json> <body-file>: prints the HTTP status (000 when the connection failed).
post() {
  curl -sS --noproxy '*' --max-time 60 -o "$3" -w '%{http_code}' -X POST "$FLEET_URL$1" \
    -H 'Content-Type: application/json' --data-binary "$2" 2>>"$workdir/curl-errors.log" || true
}

# Completions answered 200 by the replica on <port>, from its /metrics.
completions_200() {
  local text
  text="$(curl -sS --noproxy '*' --max-time 10 "http://127.0.0.1:$1/metrics")" || fail "GET /metrics on port $1 failed"
  awk '/^plugformer_requests_total\{/ && index($0, "endpoint=\"/v1/completions\"") && index($0, "status=\"200\"") { s += $NF }
       END { print s + 0 }' <<<"$text"
}

# --- 1. load spread ------------------------------------------------------------------------------
info "20 completions through nginx"
mkdir -p "$workdir/phase1"
for wave in 1 2 3 4; do
  pids=()
  for j in 1 2 3 4 5; do
    n=$(( (wave - 1) * 5 + j ))
    ( post /v1/completions "$completion" "$workdir/phase1/$n.json" >"$workdir/phase1/$n.status" ) &
    pids+=($!)
  done
  wait "${pids[@]}"
done
for n in $(seq 1 20); do
  status="$(cat "$workdir/phase1/$n.status")"
  [ "$status" = 200 ] || fail "request $n: HTTP $status: $(head -c 300 "$workdir/phase1/$n.json" 2>/dev/null)"
  grep -q '"text_completion"' "$workdir/phase1/$n.json" || fail "request $n: not a text_completion: $(head -c 300 "$workdir/phase1/$n.json")"
done
c1="$(completions_200 "${replica_ports[0]}")"
c2="$(completions_200 "${replica_ports[1]}")"
info "replica 1 served $c1, replica 2 served $c2"
if [ "$c1" -lt 1 ] || [ "$c2" -lt 1 ]; then
  for p in "${replica_ports[@]}"; do
    echo "replica on port $p, GET /metrics:" >&2
    curl -sS --noproxy '*' --max-time 10 "http://127.0.0.1:$p/metrics" | grep '^plugformer_requests_total' >&2 || true
  done
  fail "both replicas must have served completions (status=\"200\" in their /metrics): replica 1 $c1, replica 2 $c2"
fi
[ $((c1 + c2)) -eq 20 ] || fail "the replicas' metrics count $((c1 + c2)) completions, 20 were sent"

# --- 2. SSE through nginx ------------------------------------------------------------------------
info "streamed completion through nginx"
stream='{"model":"'"$model_name"'","prompt":"Once upon a time","max_tokens":32,"temperature":0,"stream":true}'
sse="$workdir/stream.txt"
ctype="$(curl -sSN --noproxy '*' --max-time 60 -o "$sse" -w '%{http_code} %{content_type}' -X POST "$FLEET_URL/v1/completions" \
  -H 'Content-Type: application/json' --data-binary "$stream")" || fail "streamed request failed"
[ "${ctype%% *}" = 200 ] || fail "stream: HTTP $ctype"
case "${ctype#* }" in text/event-stream*) ;; *) fail "stream: Content-Type ${ctype#* }" ;; esac
[ "$(tail -c 14 "$sse" | od -An -c | tr -d ' \n')" = 'data:[DONE]\n\n' ] || fail "stream does not end with 'data: [DONE]\\n\\n': $(tail -c 80 "$sse" | od -c | tail -3)"
awk 'NR % 2 == 1 && !/^data: / { print "line " NR " is not a data line: " $0; bad = 1 }
     NR % 2 == 0 && $0 != ""    { print "line " NR " should be empty: " $0; bad = 1 }
     END { exit bad }' "$sse" || fail "bad SSE framing through nginx"
[ "$(grep -c '^data: {' "$sse")" -ge 2 ] || fail "stream has fewer than 2 JSON events"

# --- 3. failover -----------------------------------------------------------------------------------
info "kill -9 replica 1 (pid ${replica_pids[0]}) under load"
long='{"model":"'"$model_name"'","prompt":"Once upon a time","max_tokens":64,"temperature":0}'
mkdir -p "$workdir/phase3"
per_loop=15
for loop in 1 2; do
  (
    for n in $(seq 1 "$per_loop"); do
      s="$(post /v1/completions "$long" "$workdir/phase3/$loop-$n.json")"
      echo "$n $s" >>"$workdir/phase3/loop-$loop.status"
    done
  ) &
  loop_pids+=($!)
done
before2="$(completions_200 "${replica_ports[1]}")"
deadline=$((SECONDS + 60))
until [ "$(cat "$workdir"/phase3/loop-*.status 2>/dev/null | wc -l)" -ge 4 ]; do
  [ $SECONDS -lt $deadline ] || fail "the request loops made no progress"
  sleep 0.05
done
kill -9 "${replica_pids[0]}"
done_at_kill="$(cat "$workdir"/phase3/loop-*.status | wc -l)"
info "killed after $done_at_kill of $((2 * per_loop)) requests"
for p in "${loop_pids[@]}"; do wait "$p" || fail "a request loop failed"; done
loop_pids=()
alive "${replica_pids[0]}" && fail "replica 1 survived kill -9"
total="$(cat "$workdir"/phase3/loop-*.status | wc -l)"
[ "$total" -eq $((2 * per_loop)) ] || fail "$total of $((2 * per_loop)) requests recorded"
bad="$(awk '$2 != 200' "$workdir"/phase3/loop-*.status | wc -l)"
if [ "$bad" -ne 0 ]; then
  for f in "$workdir"/phase3/loop-*.status; do
    awk -v f="$f" '$2 != 200 { print f ": request " $1 " got HTTP " $2 }' "$f" >&2
  done
  fail "$bad request(s) did not get 200 while replica 1 died"
fi
[ "$done_at_kill" -lt "$total" ] || fail "every request finished before the kill; nothing tested"
after2="$(completions_200 "${replica_ports[1]}")"
info "replica 2 served $((after2 - before2)) of the $total requests of the failover phase"
[ $((after2 - before2)) -ge $((total - done_at_kill)) ] || fail "replica 2 served $((after2 - before2)) requests, but $((total - done_at_kill)) were sent after the kill"
retries="$(awk '/upstream_status=[0-9]+, / { n++ } END { print n + 0 }' "$workdir/nginx-access.log")"
info "nginx replayed $retries request(s) on the other replica (access log: several upstream statuses)"

info "5 more completions with replica 1 gone"
for n in 1 2 3 4 5; do
  s="$(post /v1/completions "$completion" "$workdir/after-$n.json")"
  [ "$s" = 200 ] || fail "request $n after the failover: HTTP $s"
done

# --- 4. stop -----------------------------------------------------------------------------------------
info "fleet.sh stop"
"$fleet" stop --workdir "$workdir" --grace 20
alive "$FLEET_NGINX_PID" && fail "nginx (pid $FLEET_NGINX_PID) still runs after stop"
alive "${replica_pids[1]}" && fail "replica 2 (pid ${replica_pids[1]}) still runs after stop"
exit 0
