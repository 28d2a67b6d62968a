#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test that needs no GPU.
#   scripts/test.sh            warnings-as-errors build in build/, then
#                              a clang build with address+undefined sanitizers
#                              and short fuzz runs (build-san/), then a clang
#                              ThreadSanitizer build running the threaded
#                              tests, label tsan (build-tsan/)
#   TF_TEST_QUICK=1 scripts/test.sh   skip the two sanitizer builds
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
jobs=$(nproc)
# The tests run side by side (ctest -j) and each uses every CPU: OpenMP
# threads that spin while waiting then take the CPUs from one another (a
# trainer step measured 22x slower on a loaded 2-core machine). Passive
# waiting costs little here (docs/PERFORMANCE.md, "OpenMP wait policy").
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

echo "== build (gcc, -Werror) =="
cmake -S . -B build -G Ninja -DTF_WERROR=ON >/dev/null
cmake --build build -j "$jobs"
echo "== tests =="
(cd build && ctest -LE gpu --output-on-failure -j "$jobs")

if [ "${TF_TEST_QUICK:-0}" != 1 ]; then
  echo "== build (clang, address+undefined sanitizers, fuzzers) =="
  CC=clang cmake -S . -B build-san -G Ninja -DTF_WERROR=ON -DTF_SANITIZE=ON -DTF_FUZZ=ON -DTF_CUDA=OFF >/dev/null
  cmake --build build-san -j "$jobs"
  echo "== tests under sanitizers (unit, the CLIs on real inputs), and fuzz runs =="
  (cd build-san && ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$PWD/../tests/lsan.supp ctest -L "unit|fuzz|sanitize" --output-on-failure -j "$jobs")

  echo "== build (clang, thread sanitizer) =="
  CC=clang cmake -S . -B build-tsan -G Ninja -DTF_WERROR=ON -DTF_SANITIZE=thread -DTF_CUDA=OFF >/dev/null
  cmake --build build-tsan -j "$jobs"
  echo "== threaded tests under ThreadSanitizer (ctest sets TSAN_OPTIONS and OpenMP's Archer tool) =="
  (cd build-tsan && ctest -L tsan --output-on-failure -j "$jobs")
fi
