"""VAE encoder throughput: transfuse (C, CPU kernels) against the PyTorch
twin (tests/preprocess/vae/twin.py, Debian's torch, fp32) in the same run,
same machine, same thread count, same checkpoint.

usage: /usr/bin/python3 bench/vae_encode_vs_torch.py BUILD_DIR [--rounds 2]
         [--batch 8] [--threads 2] [--layout sd] [--vae DIR] [--im2col]
Writes a random SD-shaped checkpoint with `transfuse vae init` unless --vae
is given. Rounds alternate C and PyTorch, so load from other processes hits
both; each round prints wall-clock and per-CPU-second rates (CPU time
stretches much less than wall time when other processes share the cores),
and the summary compares the best round of each side.
"""
import argparse
import json
import os
import resource
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


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_torch(model, batch, size):
    """(images/s, images per CPU-second) of one batch, after a warm-up."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    with torch.no_grad():
        model.encode(x[:1])  # warm-up
        t, c = time.time(), cpu_seconds()
        model.encode(x)
        dt, dc = time.time() - t, cpu_seconds() - c
    return batch / dt, batch / dc


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
    rows = []
    for r in range(a.rounds):
        c = run_c(a.build, vae, a.batch, a.threads, True)
        t, tc = run_torch(model, a.batch, 256)
        rows.append((c, t, tc))
        print("round %d (load %.1f): transfuse %.3f images/s, %.3f per CPU-s (%.0f GFLOP/s; sgemm peak %.0f GFLOP/s) | "
              "PyTorch %.3f images/s, %.3f per CPU-s | ratio %.2fx wall, %.2fx CPU" %
              (r + 1, os.getloadavg()[0], c["images_per_s"], c["images_per_cpu_s"], c["gflops"],
               c["sgemm_peak_gflops"], t, tc, c["images_per_s"] / t, c["images_per_cpu_s"] / tc))
        if a.im2col:
            c2 = run_c(a.build, vae, a.batch, a.threads, False)
            print("         transfuse with im2col only: %.3f images/s, %.3f per CPU-s (%.2fx / %.2fx PyTorch)" %
                  (c2["images_per_s"], c2["images_per_cpu_s"], c2["images_per_s"] / t, c2["images_per_cpu_s"] / tc))
    # Best of the rounds on each side: the run least disturbed by others.
    bc = max(rows, key=lambda x: x[0]["images_per_s"])[0]
    bt = max(x[1] for x in rows)
    bcc = max(x[0]["images_per_cpu_s"] for x in rows)
    btc = max(x[2] for x in rows)
    print("encoder %s 256x256 batch %d, %d threads, %.1f GFLOP per image (direct-convolution count)" %
          (a.layout, a.batch, a.threads, bc["gflop_per_image"]))
    print("best of %d rounds: transfuse %.3f images/s = %.0f GFLOP/s, %.0f%% of the best sgemm peak %.0f GFLOP/s; "
          "PyTorch %.3f images/s" % (a.rounds, bc["images_per_s"], bc["gflops"],
                                     100 * bc["gflops"] / max(x[0]["sgemm_peak_gflops"] for x in rows),
                                     max(x[0]["sgemm_peak_gflops"] for x in rows), bt))
    print("ratio transfuse / PyTorch: %.2fx (best wall), %.2fx (best per CPU-second)" % (bc["images_per_s"] / bt,
                                                                                          bcc / btc))

if __name__ == "__main__":
    main()
