#!/usr/bin/env bash
# Two hosts on one machine: two network namespaces joined by a veth pair, one tensor-parallel rank
# in each (`--nnodes 2 --node-rank R --master-addr ...`). The split model must print what one
# process prints, its traffic must cross the link, and killing the rank on the second host
# mid-generation must make the first exit naming it.
# Usage: two_hosts_test.sh <plugformer binary> <model dir>. Exit 77 (skipped) without root / ip.
set -euo pipefail
cli=$1
model=$2

if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null; then
  echo "skipped: needs root and iproute2 to create network namespaces"
  exit 77
fi

tag=$$
subnet="10.$((100 + tag % 100)).$((tag / 100 % 250)).0"
ns0="pftp0-$tag" ns1="pftp1-$tag" veth0="pftp0v$tag" veth1="pftp1v$tag"
addr0="${subnet%.0}.1" addr1="${subnet%.0}.2"
work=$(mktemp -d)
cleanup() {
  for ns in "$ns0" "$ns1"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns0"
ip netns add "$ns1"
ip link add "${veth0:0:15}" type veth peer name "${veth1:0:15}"
veth0=${veth0:0:15} veth1=${veth1:0:15}
ip link set "$veth0" netns "$ns0"
ip link set "$veth1" netns "$ns1"
ip -n "$ns0" addr add "$addr0/24" dev "$veth0"
ip -n "$ns1" addr add "$addr1/24" dev "$veth1"
for ns in "$ns0" "$ns1"; do ip -n "$ns" link set lo up; done
ip -n "$ns0" link set "$veth0" up
ip -n "$ns1" link set "$veth1" up

tx_bytes() { ip netns exec "$ns0" cat "/sys/class/net/$veth0/statistics/tx_bytes"; }

# rank_on <host index> <port> <extra args...>: one rank in that host's namespace, in the background.
rank_on() {
  local host=$1 port=$2
  shift 2
  local ns=$ns0
  [ "$host" = 1 ] && ns=$ns1
  ip netns exec "$ns" env OMP_NUM_THREADS=1 timeout 120 "$cli" generate "$model" "Once upon a time" "$@" \
    --tensor-parallel 2 --nnodes 2 --node-rank "$host" --master-addr "$addr0" --master-port "$port" \
    >"$work/out$host" 2>"$work/err$host" &
}

expected=$("$cli" generate "$model" "Once upon a time" --max-new-tokens 40)
before=$(tx_bytes)
rank_on 0 29561 --max-new-tokens 40
pid0=$!
rank_on 1 29561 --max-new-tokens 40
pid1=$!
status=0
wait "$pid0" || status=$?
wait "$pid1" || status=$?
if [ "$status" -ne 0 ]; then
  echo "FAIL: the two ranks exited with $status"; cat "$work/err0" "$work/err1"; exit 1
fi
if [ "$(cat "$work/out0")" != "$expected" ]; then
  echo "FAIL: two hosts printed"; cat "$work/out0"; echo "one process printed"; echo "$expected"; exit 1
fi
if [ -s "$work/out1" ]; then echo "FAIL: the second host's rank printed to stdout"; cat "$work/out1"; exit 1; fi
sent=$(( $(tx_bytes) - before ))
if [ "$sent" -lt 100000 ]; then echo "FAIL: only $sent bytes crossed the veth link"; exit 1; fi
echo "ok: two hosts over $veth0 ($addr0 <-> $addr1) printed one process's 40 tokens; $sent bytes sent by host 0"

# The second host's rank dies mid-generation: the first exits with an error naming it.
rank_on 0 29562 --max-new-tokens 480
pid0=$!
rank_on 1 29562 --max-new-tokens 480
pid1=$!
for _ in $(seq 1 1200); do
  grep -q "Once upon a time," "$work/out0" 2>/dev/null && break
  sleep 0.1
done
for pid in $(ip netns pids "$ns1"); do kill -STOP "$pid" 2>/dev/null || true; done
for pid in $(ip netns pids "$ns1"); do kill -9 "$pid" 2>/dev/null || true; done
killed=$(date +%s)
status=0
wait "$pid0" || status=$?
elapsed=$(( $(date +%s) - killed ))
if [ "$status" -ne 1 ] || ! grep -q "rank 1 stopped responding" "$work/err0"; then
  echo "FAIL: rank 0 exited with $status after rank 1 was killed:"; cat "$work/err0"; exit 1
fi
if [ "$elapsed" -gt 30 ]; then echo "FAIL: rank 0 took ${elapsed}s to give up"; exit 1; fi
echo "ok: rank 1 killed on the second host; rank 0 exited in ${elapsed}s: $(tail -n 1 "$work/err0")"
