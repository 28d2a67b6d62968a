#!/usr/bin/env bash
# kafka_broker_cli: `transfuse broker` as a separate process, driven by the
# transfuse Kafka commands and by kcat (the peer): publish with done markers,
# ls with watermarks and group lag, verify and cat on a topic range, raw
# records read by protoc --decode, byte-identical with what kcat fetched,
# archive back to shard files, kcat-produced records read by transfuse,
# clear refusals and usage errors, clean stop on SIGTERM.
#   kafka_broker_cli.sh TRANSFUSE MAKE_DATASET PROTO_DIR WORKDIR
set -euo pipefail
T=$1 MK=$2 PROTO=$3 W=$4
rm -rf "$W" && mkdir -p "$W/files"
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v kcat >/dev/null || fail "kcat is not installed (scripts/install-deps.sh --test)"

# Usage errors come before any work.
set +e
"$T" broker --brokers 0 --topic t:1 2>/dev/null; [ $? = 2 ] || fail "--brokers 0 should be a usage error"
"$T" broker --topic nopartitions 2>/dev/null; [ $? = 2 ] || fail "--topic without :P should be a usage error"
"$T" shards publish "$W" --to http://x/y 2>/dev/null; [ $? = 2 ] || fail "publish to a non-kafka URL should be exit 2"
set -e

"$T" broker --brokers 2 --topic samples:3 --topic peer:2 --bootstrap-file "$W/bs" >"$W/broker.out" 2>"$W/broker.err" &
BROKER=$!
trap 'kill $BROKER 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$W/bs" ] && break; sleep 0.1; done
[ -s "$W/bs" ] || fail "broker wrote no bootstrap file"
BS=$(cat "$W/bs")
[ "$(head -1 "$W/broker.out")" = "$BS" ] || fail "broker printed another address than it wrote"
URL="kafka://$BS/samples"

N=300
"$MK" "$W/data" $N --files "$W/files"

# publish: every shard gets its done marker only after delivery.
"$T" shards publish "$W/data" --to "$URL" --flow-group trainer 2>"$W/pub.err" || { cat "$W/pub.err"; fail publish; }
[ "$(ls "$W"/data/.published/*/samples | wc -l)" = 3 ] || fail "expected 3 done markers"
"$T" shards publish "$W/data" --to "$URL" 2>"$W/pub2.err"
grep -q "0 records .* 3 shard(s) already published" "$W/pub2.err" || { cat "$W/pub2.err"; fail "rerun should skip"; }

# ls: watermarks add up; a group that read nothing lags by everything.
"$T" shards ls --json --group trainer "$URL" >"$W/ls.json"
/usr/bin/python3 - "$W/ls.json" $N <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); n = int(sys.argv[2])
assert j["mock"] and j["brokers"] == 2, j
assert len(j["partitions"]) == 3 and sum(p["records"] for p in j["partitions"]) == n, j
g = j["groups"][0]
assert g["group"] == "trainer" and g["lag"] == n, g
PY
"$T" shards ls "$URL" >"$W/ls.txt"
grep -q "name groups with --group" "$W/ls.txt" || fail "ls without --group should say why groups are not listed"

# verify and cat read the topic like a shard file.
"$T" shards verify "$URL" >"$W/verify.txt" || { cat "$W/verify.txt"; fail verify; }
grep -q "^OK: topic samples, $N good records" "$W/verify.txt" || fail "verify summary"
[ "$("$T" shards cat --limit 2 --fields key "$URL" | wc -l)" = 2 ] || fail "cat --limit"
"$T" shards stat --json "$URL" | /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin); n = int(sys.argv[1])
assert j["records"] == n and j["latent_mean"] == {"f32 [4,32,32]": n}, j
assert j["facts"]["vae"]["id"] == "vae-feedbeef", j["facts"]' $N || fail "stat of a topic"
meta=$("$T" shards cat --meta --fields key --partition 1 --limit 1 "$URL")
[[ $meta == *'"_partition":1,"_offset":0'* ]] || fail "cat --meta on a topic: $meta"
[ $(( $("$T" shards cat --fields key --rank 0 --world 2 "$URL" | wc -l) + $("$T" shards cat --fields key --rank 1 --world 2 "$URL" | wc -l) )) = $N ] || fail "topic ranks"
"$T" shards cat --fields key "$URL" | /usr/bin/python3 -c '
import json, sys
keys = [json.loads(l)["key"] for l in sys.stdin]
assert len(keys) == len(set(keys)) == int(sys.argv[1]), len(keys)' $N

# The first record of partition 0: transfuse --raw, kcat and protoc agree.
"$T" shards cat --raw --partition 0 "$URL" >"$W/one.pb"
kcat -C -b "$BS" -t samples -p 0 -o beginning -c 1 -e -q -f '%s' >"$W/kcat_one.pb"
cmp "$W/one.pb" "$W/kcat_one.pb" || fail "transfuse and kcat fetched different bytes"
protoc --decode=transfuse.v1.Sample -I "$PROTO" "$PROTO/transfuse.proto" <"$W/kcat_one.pb" >"$W/one.txt"
grep -q '^caption: "a photograph of item' "$W/one.txt" || fail "protoc could not decode what kcat fetched"
KEY=$(kcat -C -b "$BS" -t samples -p 0 -o beginning -c 1 -e -q -f '%k')
[ -f "$W/files/$KEY.pb" ] && cmp "$W/one.pb" "$W/files/$KEY.pb" || fail "record $KEY differs from its source"
# kcat sees every record once, by key, with the identity headers.
[ "$(kcat -C -b "$BS" -t samples -o beginning -e -q -f '%k\n' | sort -u | wc -l)" = $N ] || fail "kcat count"
kcat -C -b "$BS" -t samples -o beginning -c 1 -e -q -f '%h\n' | grep -q "transfuse-vae=vae-feedbeef" || fail "headers"

# archive: topic to shard files with a manifest, verified by the shard tools.
"$T" shards archive "$URL" --out "$W/arch" 2>"$W/arch.err" || { cat "$W/arch.err"; fail archive; }
"$T" shards verify "$W/arch" >/dev/null || fail "archived dataset does not verify"
diff <("$T" shards cat --fields key "$W/data" | sort) <("$T" shards cat --fields key "$W/arch" | sort) >/dev/null ||
  fail "archive lost or changed records"
grep -q '"id": "vae-feedbeef"' "$W/arch/manifest.json" && grep -q '"dtype": "f32"' "$W/arch/manifest.json" || fail "archive manifest lacks the VAE identity"

# kcat as the producer: one file = one record; transfuse reads them back.
(cd "$W/files" && ls | sed -n '1,50p' | xargs kcat -P -b "$BS" -t peer -p 1 -k peer-key)
for _ in $(seq 50); do
  [ "$("$T" shards ls --json "kafka://$BS/peer" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["records"])')" = 50 ] && break
  sleep 0.1
done
[ "$("$T" shards cat --fields caption "kafka://$BS/peer" | wc -l)" = 50 ] || fail "kcat-produced records"
set +e
"$T" shards verify --quiet "kafka://$BS/peer" >"$W/peer.txt"; rc=$?
set -e
[ $rc = 1 ] && grep -q "FAILED: topic peer, 0 good records of 50" "$W/peer.txt" || fail "verify should flag the kcat keys"

# Refusals are clear.
set +e
"$T" shards create "kafka://$BS/new" --partitions 3 2>"$W/create.err"; rc=$?
"$T" shards cat "kafka://$BS/missing" 2>"$W/missing.err"; rc2=$?
set -e
[ $rc = 3 ] && grep -q "pass --topic NAME:PARTITIONS" "$W/create.err" || fail "create refusal ($rc): $(cat "$W/create.err")"
[ $rc2 = 3 ] && grep -q "does not exist" "$W/missing.err" || fail "missing topic ($rc2): $(cat "$W/missing.err")"

kill -TERM $BROKER
wait $BROKER || fail "broker did not stop cleanly on SIGTERM"
trap - EXIT
echo "kafka_broker_cli: all checks passed"
