#!/usr/bin/env bash
# kafka_bench: Kafka producer and consumer throughput with real-size
# (~17 KB) Sample records through `transfuse broker`, against kcat
# producing and consuming the same payloads in the same run.
#   bench/kafka_bench.sh [BUILD_DIR] [RECORDS]
# Producer: `transfuse shards publish` (reads shard files, decodes each
# record for its key, idempotent producer, waits for every delivery
# report) with the chosen settings and alternatives (-X), vs `kcat -P` on
# one file per record (kcat's defaults: not idempotent, linger 5 ms).
# Consumer: the transfuse source draining a 16-partition topic (kept under
# the broker's ~5 MiB per partition) with and without decoding, and
# `transfuse shards verify`, vs `kcat -C -e -f '%s'`.
set -euo pipefail
B=${1:-build}
N=${2:-3000}
T=$B/cli/transfuse MK=$B/tests/ops/kafka_make_dataset KC=$B/bench/kafka_consume
W=$(mktemp -d /tmp/kafka_bench.XXXXXX)
trap 'kill $BROKER 2>/dev/null || true; rm -rf "$W"' EXIT
mkdir -p "$W/files"
"$MK" "$W/data" "$N" --files "$W/files"
MB=$(du -sb "$W/files" | awk '{print $1/1e6}')
echo "records: $N, $MB MB of payload ($(ls "$W/files" | sed -n 1p | xargs -I{} stat -c %s "$W/files/{}") bytes each)"
"$T" broker --topic p:4 --topic c:16 --bootstrap-file "$W/bs" >/dev/null 2>&1 &
BROKER=$!
for _ in $(seq 100); do [ -s "$W/bs" ] && break; sleep 0.1; done
BS=$(cat "$W/bs")
now() { date +%s.%N; }
rate() { awk -v mb="$MB" -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", mb/(b-a)}'; }

kcat_produce() {
  local a b; a=$(now)
  (cd "$W/files" && ls | xargs kcat -P -b "$BS" -t p -X queue.buffering.max.kbytes=65536 2>/dev/null)
  b=$(now); rate "$a" "$b"
}
tf_produce() {
  local a b; a=$(now)
  "$T" shards publish "$W/data" --to "kafka://$BS/p" --force "$@" 2>/dev/null
  b=$(now); rate "$a" "$b"
}

echo
echo "== producer MB/s (transfuse vs kcat in the same round; ratio = transfuse/kcat) =="
declare -A VARIANTS=(
  [chosen]=""
  [linger20]="-X linger.ms=20"
  [linger5]="-X linger.ms=5"
  [linger100]="-X linger.ms=100"
  [batch16k]="-X batch.size=16384"
  [lz4]="-X compression.codec=lz4"
  [zstd]="-X compression.codec=zstd"
  [inflight5]="-X max.in.flight.requests.per.connection=5"
)
for round in 1 2 3; do
  for v in chosen linger5 linger20 linger100 batch16k lz4 zstd inflight5; do
    k=$(kcat_produce)
    # shellcheck disable=SC2086
    t=$(tf_produce ${VARIANTS[$v]})
    printf "round %d %-10s transfuse %7s MB/s  kcat %7s MB/s  ratio %s\n" "$round" "$v" "$t" "$k" \
      "$(awk -v t="$t" -v k="$k" 'BEGIN{printf "%.2f", t/k}')"
  done
done

echo
echo "== consumer MB/s (16 partitions, everything retained) =="
"$T" shards publish "$W/data" --to "kafka://$BS/c" --force 2>/dev/null
for round in 1 2 3; do
  a=$(now); kcat -C -b "$BS" -t c -o beginning -e -q -f '%s' >/dev/null 2>&1; b=$(now); k=$(rate "$a" "$b")
  a=$(now); "$KC" "$BS" c >/dev/null; b=$(now); t=$(rate "$a" "$b")
  a=$(now); "$KC" "$BS" c --decode >/dev/null; b=$(now); d=$(rate "$a" "$b")
  a=$(now); "$T" shards verify --quiet "kafka://$BS/c" >/dev/null; b=$(now); v=$(rate "$a" "$b")
  printf "round %d kcat %7s MB/s  source %7s MB/s (ratio %s)  source+decode %7s MB/s (ratio %s)  shards verify %7s MB/s\n" \
    "$round" "$k" "$t" "$(awk -v t="$t" -v k="$k" 'BEGIN{printf "%.2f", t/k}')" "$d" \
    "$(awk -v t="$d" -v k="$k" 'BEGIN{printf "%.2f", t/k}')" "$v"
done
