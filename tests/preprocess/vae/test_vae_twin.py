"""Checks `transfuse vae` against the PyTorch twin (twin.py) on the same
safetensors files: encoder mean/logvar and decoder output within 1e-4
relative error (max |c - ref| / max |ref|), the reference run in float64.

usage: test_vae_twin.py TRANSFUSE WORKDIR tiny|sd
  tiny: checkpoints of the tiny layout written by `vae init` (f32, bf16,
        f16) and by the twin itself (old attention names as 1x1 convs;
        a 16-channel FLUX-style layout sharded with an index); encode,
        sampling statistics, decode.
  sd:   the full SD-shaped encoder at 256x256, batch 1.
Exits non-zero on any failure; prints the largest differences seen.
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twin  # noqa: E402

TOL = 1e-4
failures = []


def rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def check(label, value, tol=TOL):
    ok = value <= tol
    print("%-52s %.3e %s" % (label, value, "ok" if ok else "FAIL (tolerance %.0e)" % tol))
    if not ok:
        failures.append(label)


def run(*args):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        raise SystemExit("command failed (%d): %s" % (r.returncode, " ".join(map(str, args))))
    return r


def make_images(work, n, seed):
    """n images (PNG, JPEG alternately) of different sizes and aspect
    ratios: smooth gradients plus noise, like photos rather than noise."""
    rng = np.random.RandomState(seed)
    paths = []
    for i in range(n):
        h, w = 240 + 37 * i, 300 + 23 * i
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * (2 + c) + yy * (3 - c)) % 256 for c in range(3)], -1).astype(np.float64)
        img = np.clip(img * 0.7 + rng.randn(h, w, 3) * 20 + 30, 0, 255).astype(np.uint8)
        p = os.path.join(work, "img%d.%s" % (i, "jpg" if i % 2 else "png"))
        Image.fromarray(img).save(p, quality=95) if i % 2 else Image.fromarray(img).save(p)
        paths.append(p)
    return paths


def check_encode(tf, vae_dir, images, work, label, latent_mode="sample"):
    out = os.path.join(work, label + ".safetensors")
    run(tf, "vae", "encode", "--vae", vae_dir, "--out", out, "--seed", "7", "--latent", latent_mode, "--threads", "2",
        *images)
    got, meta = twin.st_read(out)
    m = twin.build(vae_dir, decoder=False, dtype=torch.float64)
    with torch.no_grad():
        mean, logvar = m.encode(got["image"].double())
    check(label + ": encoder mean", rel(got["mean"], mean))
    check(label + ": encoder logvar", rel(got["logvar"], logvar))
    cfg = m.cfg
    scale, shift = cfg.get("scaling_factor", 0.18215), cfg.get("shift_factor") or 0.0
    z = got["latent"].double() / scale + shift
    eps = (z - got["mean"].double()) / torch.exp(0.5 * got["logvar"].double())
    if latent_mode == "mean":
        check(label + ": latent == (mean - shift) * scale", float(eps.abs().max()), 1e-5)
    else:
        # eps must look standard normal.
        check(label + ": sample eps mean", abs(float(eps.mean())), 0.1)
        check(label + ": sample eps std - 1", abs(float(eps.std()) - 1.0), 0.1)
    if meta.get("vae_identity", "") == "" or len(meta["vae_identity"]) != 64:
        failures.append(label + ": vae_identity metadata")
    return out, got


def check_decode(tf, vae_dir, latents, work, label):
    out_dir = os.path.join(work, label + "_png")
    tensors = os.path.join(work, label + "_dec.safetensors")
    run(tf, "vae", "decode", "--vae", vae_dir, "--out", out_dir, "--tensors", tensors, "--threads", "2", latents)
    got, _ = twin.st_read(tensors)
    lat, _ = twin.st_read(latents)
    m = twin.build(vae_dir, encoder=False, dtype=torch.float64)
    with torch.no_grad():
        ref = m.decode_scaled(lat["latent"].double())
    check(label + ": decoder output", rel(got["image"], ref))
    pngs = sorted(os.listdir(out_dir))
    if len(pngs) != ref.shape[0]:
        failures.append(label + ": expected %d PNGs, found %d" % (ref.shape[0], len(pngs)))
    else:
        px = np.asarray(Image.open(os.path.join(out_dir, pngs[0])).convert("RGB")).astype(np.float64)
        want = ((ref[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
        check(label + ": PNG vs decoder output (8-bit levels)", float(np.abs(px - want).max()), 1.0)


def case_cli(tf, work, vae_dir, images):
    """Usage errors exit 2 before any work; --help exits 0; a broken image
    is one counted failure (exit 1) and the others are still encoded."""
    def status(*args):
        return subprocess.run([tf, "vae", *args], capture_output=True, text=True)
    out = os.path.join(work, "cli.safetensors")
    cases = [
        ((), 2), (("--help",), 0), (("encode", "--help"), 0), (("decode", "--help"), 0), (("init", "--help"), 0),
        (("frobnicate",), 2), (("init", "--layout", "nope", "--out", work + "/x"), 2),
        (("init", "--layout", "tiny"), 2), (("init", "--layout", "tiny", "--out", work + "/x", "--dtype", "f8"), 2),
        (("encode", "--vae", vae_dir, "--out", out), 2),
        (("encode", "--vae", vae_dir, "--out", out, "--batch", "0", images[0]), 2),
        (("encode", "--vae", vae_dir, "--out", out, "--latent", "mode", images[0]), 2),
        (("encode", "--vae", vae_dir, "--out", out, "--size", "100", images[0]), 2),
        (("decode", "--vae", vae_dir, "--out", work), 2),
        (("encode", "--vae", work + "/missing", "--out", out, images[0]), 3),
    ]
    for args, want in cases:
        r = status(*args)
        if r.returncode != want:
            failures.append("vae %s: exit %d, expected %d" % (" ".join(args), r.returncode, want))
    if "real weights" not in status("init", "--help").stdout:
        failures.append("vae init --help does not say that real use needs real weights")
    broken = os.path.join(work, "broken.png")
    with open(images[0], "rb") as f:
        data = f.read()
    with open(broken, "wb") as f:
        f.write(data[: len(data) // 2])
    r = status("encode", "--vae", vae_dir, "--out", out, broken, images[1])
    got, meta = twin.st_read(out) if os.path.exists(out) else ({}, {})
    if r.returncode != 1 or "broken.png" not in r.stderr or got.get("mean", torch.empty(0)).shape[:1] != (1,):
        failures.append("a broken PNG among good ones: exit %d, output %s" % (r.returncode, list(got)))
    elif images[1] not in meta.get("sources", ""):
        failures.append("sources metadata lacks the encoded image")
    print("%-52s %s" % ("command line: usage errors, help, broken image", "ok"))


def case_tiny(tf, work):
    images = make_images(work, 2, 0)
    tiny = twin.json.load(open(os.path.join(os.path.dirname(__file__), "tiny_config.json")))
    # 1. `vae init` checkpoints: f32 (encode + decode), bf16 and f16.
    for dtype in ("f32", "bf16", "f16"):
        d = os.path.join(work, "tiny_" + dtype)
        run(tf, "vae", "init", "--layout", "tiny", "--seed", "3", "--dtype", dtype, "--out", d)
        lat, _ = check_encode(tf, d, images if dtype == "f32" else images[:1], work, "init tiny " + dtype)
        if dtype == "f32":
            case_cli(tf, work, d, images)
            check_decode(tf, d, lat, work, "init tiny f32")
            check_encode(tf, d, images[:1], work, "init tiny f32 mean", latent_mode="mean")
    # 16-bit files must hold exactly the f32 weights rounded once.
    a, _ = twin.st_read(os.path.join(work, "tiny_f32", "diffusion_pytorch_model.safetensors"))
    for dtype, tdt in (("bf16", torch.bfloat16), ("f16", torch.float16)):
        b, _ = twin.st_read(os.path.join(work, "tiny_" + dtype, "diffusion_pytorch_model.safetensors"))
        worst = max(float((a[n].to(tdt).float() - b[n].float()).abs().max()) for n in a)
        check("init tiny %s: stored = f32 weights rounded to %s" % (dtype, dtype), worst, 0.0)
    # 2. Twin-written: old attention names as (C,C,1,1) convs, f16.
    d = os.path.join(work, "twin_old")
    twin.random_checkpoint(d, tiny, 11, old_names=True, dtype=torch.float16)
    lat, _ = check_encode(tf, d, images[:2], work, "twin tiny old-names f16")
    check_decode(tf, d, lat, work, "twin tiny old-names f16")
    # 3. Twin-written FLUX-style: 16 channels, shift, no quant convs, 3 shards, bf16.
    flux = dict(tiny, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                use_post_quant_conv=False)
    d = os.path.join(work, "twin_flux")
    twin.random_checkpoint(d, flux, 12, dtype=torch.bfloat16, shards=3)
    lat, _ = check_encode(tf, d, images[:2], work, "twin tiny flux sharded bf16")
    check_decode(tf, d, lat, work, "twin tiny flux sharded bf16")


def case_sd(tf, work):
    images = make_images(work, 1, 1)
    d = os.path.join(work, "sd")
    run(tf, "vae", "init", "--layout", "sd", "--seed", "5", "--out", d)
    check_encode(tf, d, images, work, "init sd encoder 256x256")


def main():
    tf, work, case = sys.argv[1], sys.argv[2], sys.argv[3]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    torch.set_num_threads(2)
    {"tiny": case_tiny, "sd": case_sd}[case](tf, work)
    if failures:
        print("FAILED:", ", ".join(failures))
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
