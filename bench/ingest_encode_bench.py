#!/usr/bin/env python3
"""ingest_encode_bench.py: stage 2 of ingest (`transfuse ingest encode`)
against `transfuse vae encode` on the same crops, same VAE, same batch and
threads, in the same run. The crops are 256x256 centre crops of Debian's
wallpaper photos (tests/ingest/stage1_records.py): as PNG files for `vae
encode`, as stage-1 records (rgb8 in Sample.image) in a shard folder for
the stage. Rounds alternate the two sides; each reports images/s (wall,
VAE load included on both sides) and images per CPU-second (user + sys of
the process), and the stage's overhead against `vae encode`.

usage: ingest_encode_bench.py BUILD_DIR [--images 16] [--rounds 2] [--threads 2] [--batch 8] [--vae DIR]
Needs Debian's python3-pil and numpy (/usr/bin/python3).
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "ingest"))
from stage1_records import crop_records, photo_crops, shards_import  # noqa: E402

from PIL import Image  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("build")
ap.add_argument("--images", type=int, default=16)
ap.add_argument("--rounds", type=int, default=2)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--vae", help="an SD-layout VAE folder (default: a random one, vae init --layout sd)")
args = ap.parse_args()
T = os.path.join(args.build, "cli", "transfuse")
work = tempfile.mkdtemp(prefix="encode-bench-")


def timed(argv):
    """Runs argv; returns (wall seconds, CPU seconds of the child)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    p = subprocess.run(argv, capture_output=True)
    wall = time.time() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"{argv[:3]} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


try:
    crops = photo_crops(256, args.images)
    if not crops:
        sys.exit("no wallpaper photos installed")
    records, by_key = crop_records(crops, args.images)
    for r in records:  # rgb8 everywhere: the declared default crop format
        rgb = by_key[r["key"]]
        import base64
        r["image"] = {"format": "rgb8", "width": 256, "height": 256, "data": base64.b64encode(rgb.tobytes()).decode()}
    files = []
    for k in sorted(by_key):
        f = os.path.join(work, f"{k}.png")
        Image.fromarray(by_key[k]).save(f)
        files.append(f)
    crops_dir = os.path.join(work, "crops")
    p = shards_import(T, work, crops_dir, "crops", records, shard_records=1000)
    if p.returncode:
        sys.exit(p.stderr.decode())
    vae = args.vae
    if not vae:
        vae = os.path.join(work, "vae")
        subprocess.run([T, "vae", "init", "--layout", "sd", "--seed", "1", "--out", vae], check=True,
                       capture_output=True)
    n = len(files)
    common = ["--vae", vae, "--batch", str(args.batch), "--threads", str(args.threads)]
    print(f"{n} crops 256x256, SD-layout VAE, batch {args.batch}, {args.threads} threads; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| round | vae encode images/s (wall) | per CPU-s | ingest encode images/s (wall) | per CPU-s | "
          "overhead wall | overhead CPU |")
    print("|---|---|---|---|---|---|---|")
    for rnd in range(1, args.rounds + 1):
        vw, vc = timed([T, "vae", "encode", *common, "--size", "256", "--latent", "mean", "--out",
                        os.path.join(work, "x.safetensors"), *files])
        out = os.path.join(work, f"out{rnd}")
        sw, sc = timed([T, "ingest", "encode", "--from", crops_dir, "--out", out, *common])
        print(f"| {rnd} | {n / vw:.3f} | {n / vc:.3f} | {n / sw:.3f} | {n / sc:.3f} | "
              f"{(sw / vw - 1) * 100:+.1f}% | {(sc / vc - 1) * 100:+.1f}% |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
finally:
    shutil.rmtree(work, ignore_errors=True)
