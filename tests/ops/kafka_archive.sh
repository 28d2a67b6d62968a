#!/usr/bin/env bash
# kafka_archive: what must not lose or double records between a topic on
# `transfuse broker` and shard folders, each against the real binary:
#   - `shards archive` (with and without --group) SIGKILLed at several
#     points and rerun leaves every record exactly once (counted by key);
#   - `shards archive` checks topic bytes like import: empty values,
#     garbage, a message key that differs from the sample key (made with
#     kcat) are counted and reported with partition and offset, never
#     archived;
#   - `shards publish` done markers are keyed by the cluster: after the
#     embedded broker restarts, a republish without --force fills the
#     topic again;
#   - `shards publish --metrics-port` serves its series while it runs, and
#     SIGTERM stops it with exit 130.
#   kafka_archive.sh TRANSFUSE MAKE_DATASET WORKDIR
set -euo pipefail
T=$1 MK=$2 W=$3
rm -rf "$W" && mkdir -p "$W/files" "$W/junk"
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v kcat >/dev/null || fail "kcat is not installed (scripts/install-deps.sh --test)"
command -v curl >/dev/null || fail "curl is not installed"

BROKER=
start_broker() {
  rm -f "$W/bs"
  "$T" broker --topic samples:3 --topic junk:1 --topic slow:1 --bootstrap-file "$W/bs" >"$W/broker.out" 2>"$W/broker.err" &
  BROKER=$!
  for _ in $(seq 100); do [ -s "$W/bs" ] && break; sleep 0.1; done
  [ -s "$W/bs" ] || fail "broker wrote no bootstrap file"
  BS=$(cat "$W/bs")
}
trap '[ -n "$BROKER" ] && kill $BROKER 2>/dev/null || true' EXIT
start_broker

N=300
"$MK" "$W/data" $N --files "$W/files"
"$T" shards publish "$W/data" --to "kafka://$BS/samples" 2>"$W/pub.err" || { cat "$W/pub.err"; fail publish; }

# Every key of DIR exactly once, N in all, and verify clean.
exactly_once() {
  local dir=$1 what=$2 total uniq
  total=$("$T" shards cat --fields key "$dir" | wc -l)
  uniq=$("$T" shards cat --fields key "$dir" | sort -u | wc -l)
  [ "$total" = $N ] && [ "$uniq" = $N ] || fail "$what: $total records, $uniq distinct keys, expected $N"
  "$T" shards verify --quiet "$dir" >/dev/null || fail "$what: verify"
}

# Archive, killed at several points, then run to the end.
for mode in group dataset; do
  out="$W/arch-$mode"
  extra=()
  [ $mode = group ] && extra=(--group archiver)
  kills=0
  for delay in 0.05 0.15 0.25 0.35 0.5 0.7; do
    "$T" shards archive "kafka://$BS/samples" --out "$out" --shard-records 7 "${extra[@]}" 2>>"$W/arch-$mode.err" &
    pid=$!
    sleep $delay
    if kill -KILL $pid 2>/dev/null; then kills=$((kills + 1)); fi
    wait $pid 2>/dev/null || true
  done
  "$T" shards archive "kafka://$BS/samples" --out "$out" --shard-records 7 "${extra[@]}" 2>>"$W/arch-$mode.err" ||
    { cat "$W/arch-$mode.err"; fail "archive ($mode) after kills"; }
  exactly_once "$out" "archive --$mode after $kills SIGKILLs"
  # A rerun with nothing new archives nothing.
  "$T" shards archive "kafka://$BS/samples" --out "$out" "${extra[@]}" 2>"$W/again.err" || fail "archive rerun"
  grep -q ": 0 records" "$W/again.err" || { cat "$W/again.err"; fail "archive rerun ($mode) should add nothing"; }
  exactly_once "$out" "archive --$mode rerun"
done
# The group's offsets were committed with the shards: all consumed.
"$T" shards ls --json --group archiver "kafka://$BS/samples" |
  /usr/bin/python3 -c 'import json,sys; g=json.load(sys.stdin)["groups"][0]; assert g["lag"] == 0, g'

# Garbage on a topic: an empty value, random bytes, a record whose message
# key differs from its sample key, and two sound records.
good=$(ls "$W/files" | sed -n "1,2p")   # sed reads all: no SIGPIPE under pipefail
echo "k-empty:" | kcat -P -K: -Z -b "$BS" -t junk -p 0   # a NULL value
head -c 300 /dev/urandom >"$W/junk/b-random"
kcat -P -b "$BS" -t junk -p 0 -k k-random "$W/junk/b-random"
kcat -P -b "$BS" -t junk -p 0 -k wrong-key "$W/files/$(echo "$good" | sed -n 1p)"
for f in $good; do kcat -P -b "$BS" -t junk -p 0 -k "${f%.pb}" "$W/files/$f"; done
for _ in $(seq 50); do
  [ "$("$T" shards ls --json "kafka://$BS/junk" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["records"])')" = 5 ] && break
  sleep 0.1
done
set +e
"$T" shards archive "kafka://$BS/junk" --out "$W/junkarch" 2>"$W/junk.err"; rc=$?
set -e
[ $rc = 1 ] || { cat "$W/junk.err"; fail "archive of garbage should exit 1, not $rc"; }
grep -q "junk partition 0 offset 0: empty value" "$W/junk.err" || { cat "$W/junk.err"; fail "empty value not reported"; }
grep -q "junk partition 0 offset 1: " "$W/junk.err" || fail "random bytes not reported"
grep -q "junk partition 0 offset 2: message key 'wrong-key' differs" "$W/junk.err" || fail "key mismatch not reported"
grep -q "3 bad record(s) skipped" "$W/junk.err" || fail "bad records not counted"
[ "$("$T" shards cat --fields key "$W/junkarch" | wc -l)" = 2 ] || fail "archive of garbage kept other than the 2 sound records"
"$T" shards verify --quiet "$W/junkarch" >/dev/null || fail "archive of garbage does not verify"

# Publish after a broker restart: markers of the old cluster do not count.
kill -TERM $BROKER && wait $BROKER
start_broker
"$T" shards publish "$W/data" --to "kafka://$BS/samples" 2>"$W/pub3.err" || { cat "$W/pub3.err"; fail "republish"; }
"$T" shards verify "kafka://$BS/samples" >"$W/v3.txt" || { cat "$W/v3.txt" "$W/pub3.err"; fail "republish verify"; }
grep -q "^OK: topic samples, $N good records" "$W/v3.txt" || { cat "$W/v3.txt" "$W/pub3.err"; fail "after a broker restart the topic should be full again"; }
[ "$(ls -d "$W"/data/.published/*/samples | wc -l)" = 2 ] || fail "one marker folder per cluster expected"

# Metrics while publishing, and a graceful stop: flow control on a group
# that never reads keeps publish waiting.
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$T" shards publish "$W/data" --to "kafka://$BS/slow" --flow-group nobody --flow-max 100Ki --metrics-port $PORT \
  2>"$W/slow.err" &
pid=$!
ok=
for _ in $(seq 100); do
  if curl -sf "http://127.0.0.1:$PORT/metrics" >"$W/metrics.txt" 2>/dev/null &&
     grep -q '^transfuse_shards_publish_records_total{topic="slow"}' "$W/metrics.txt"; then ok=1; break; fi
  sleep 0.1
done
[ -n "$ok" ] || { cat "$W/slow.err"; fail "publish --metrics-port served no series"; }
grep -q '^transfuse_shards_publish_bad_records_total{topic="slow"} 0' "$W/metrics.txt" || fail "bad records series"
kill -TERM $pid
set +e
wait $pid; rc=$?
set -e
[ $rc = 130 ] || { cat "$W/slow.err"; fail "publish stopped by SIGTERM should exit 130, not $rc"; }
grep -q "stopped; rerun to continue" "$W/slow.err" || fail "publish stop message"

kill -TERM $BROKER && wait $BROKER || fail "broker did not stop cleanly"
trap - EXIT
echo "kafka_archive: all checks passed"
