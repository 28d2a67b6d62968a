"""VAE encoder throughput: transfuse (C, CPU kernels) against the PyTorch
twin (tests/preprocess/vae/twin.py, Debian's torch, fp32) in the same run,
same machine, same thread count, same checkpoint.

usage: /usr/bin/python3 bench/vae_encode_vs_torch.py BUILD_DIR [--rounds 2]
         [--batch 8] [--threads 2] [--layout sd] [--vae DIR] [--im2col]
Writes a random SD-shaped checkpoint with `transfuse vae init` unless --vae
is given. Rounds alternate C and PyTorch, so load from other processes hits
both; the ratio per round and the median are printed.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "preprocess", "vae"))
import twin  # noqa: E402


def run_c(build, vae, batch, threads, winograd):
    cmd = [os.path.join(build, "bench", "vae_bench"), "--vae", vae, "--batch", str(batch), "--threads", str(threads)]
    if not winograd:
        cmd.append("--no-winograd")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_torch(model, batch, size):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    with torch.no_grad():
        model.encode(x[:1])  # warm-up
        t = time.time()
        model.encode(x)
        dt = time.time() - t
    return batch / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layout", default="sd")
    ap.add_argument("--vae")
    ap.add_argument("--im2col", action="store_true", help="also time C with Winograd off")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tmp = None
    vae = a.vae
    if not vae:
        tmp = tempfile.TemporaryDirectory()
        vae = os.path.join(tmp.name, "vae")
        subprocess.run([os.path.join(a.build, "cli", "transfuse"), "vae", "init", "--layout", a.layout, "--out", vae],
                       check=True, capture_output=True)
    model = twin.build(vae, decoder=False, dtype=torch.float32)
    print("machine: %d CPUs online, load average %s; torch %s, %d threads" %
          (os.cpu_count(), os.getloadavg(), torch.__version__, torch.get_num_threads()))
    ratios = []
    for r in range(a.rounds):
        c = run_c(a.build, vae, a.batch, a.threads, True)
        t = run_torch(model, a.batch, 256)
        ratios.append(c["images_per_s"] / t)
        print("round %d: transfuse %.3f images/s (%.0f GFLOP/s = %.0f%% of sgemm peak %.0f GFLOP/s), "
              "PyTorch %.3f images/s, ratio %.2fx" %
              (r + 1, c["images_per_s"], c["gflops"], 100 * c["gflops"] / c["sgemm_peak_gflops"],
               c["sgemm_peak_gflops"], t, ratios[-1]))
        if a.im2col:
            c2 = run_c(a.build, vae, a.batch, a.threads, False)
            print("         transfuse, im2col only: %.3f images/s (%.0f GFLOP/s), %.2fx PyTorch" %
                  (c2["images_per_s"], c2["gflops"], c2["images_per_s"] / t))
    ratios.sort()
    print("encoder %s 256x256 batch %d, %d threads: %.1f GFLOP per image; median ratio transfuse/PyTorch %.2fx" %
          (a.layout, a.batch, a.threads, c["gflop_per_image"], ratios[len(ratios) // 2]))


if __name__ == "__main__":
    main()
