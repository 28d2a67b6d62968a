#!/usr/bin/env python3
"""Quality test: `transfuse preprocess crop` against a float Lanczos reference.

For every JPEG/PNG/WebP of Debian's wallpaper packages (mate-backgrounds,
gnome-backgrounds, ukui-wallpapers), the reference is Pillow's full
resolution decode (EXIF orientation applied, alpha composited onto white)
resized with Image.LANCZOS so the short side is SIZE, then centre-cropped.
Our PSNR against it must be no lower than Pillow's draft-mode pipeline
(../shared/bench/peer_crop.py's crop_pil) minus 0.5 dB, for every image.
Prints one line per image and the worst margin. Exit 1 on any failure,
77 (skip) when the corpus is not installed.

usage: quality.py TRANSFUSE [--size 256] [--limit N] [FILE_OR_DIR...]
"""
import argparse, glob, io, os, subprocess, sys, tempfile
from multiprocessing import Pool
import numpy as np
from PIL import Image, ImageOps

def files_from(paths):
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += [f for f in glob.glob(os.path.join(p, "**", "*"), recursive=True)
                    if f.lower().endswith((".jpg", ".jpeg", ".png", ".webp"))]
        elif os.path.exists(p):
            out.append(p)
    return sorted(out)

def target(w, h, s):
    k = s / min(w, h)
    return max(s, round(w * k)), max(s, round(h * k))

def flatten(im):
    im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")

def reference(path, s):
    im = flatten(Image.open(path))
    nw, nh = target(*im.size, s)
    im = im.resize((nw, nh), Image.LANCZOS)
    x, y = (nw - s) // 2, (nh - s) // 2
    return np.asarray(im.crop((x, y, x + s, y + s)), dtype=np.float64)

def pillow_draft(b, s):
    # ../shared/bench/peer_crop.py crop_pil(b, s, draft=True), restated so
    # the test does not depend on the shared folder being beside the clone.
    im = Image.open(io.BytesIO(b))
    im.draft("RGB", (s, s))
    im = im.convert("RGB")
    nw, nh = target(*im.size, s)
    im = im.resize((nw, nh), Image.BICUBIC)
    x, y = (nw - s) // 2, (nh - s) // 2
    return np.asarray(im.crop((x, y, x + s, y + s)), dtype=np.float64)

def psnr(a, b):
    mse = np.mean((a - b) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)

def score(f, out, s):
    ours = np.asarray(Image.open(os.path.join(out, os.path.basename(f) + ".png")).convert("RGB"),
                      dtype=np.float64)
    ref = reference(f, s)
    peer = pillow_draft(open(f, "rb").read(), s)
    return ours.shape == ref.shape, psnr(ours, ref), psnr(peer, ref)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("transfuse")
    ap.add_argument("paths", nargs="*", default=["/usr/share/backgrounds"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--slack", type=float, default=0.5)
    ap.add_argument("--extra", default="", help="extra crop flags, space separated")
    a = ap.parse_args()
    files = files_from(a.paths)
    if not files:
        print("quality: no wallpaper corpus installed; skipping")
        return 77
    with tempfile.TemporaryDirectory() as out:
        cmd = [a.transfuse, "preprocess", "crop", "--size", str(a.size), "--out", out] + a.extra.split() + files
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stderr)
            return 1
        verdict = {}
        for line in res.stdout.splitlines():
            path, cls, detail = line.split("\t", 2)
            verdict[path] = (cls, detail)
        failures, worst = 0, None
        good = [f for f in files if verdict.get(f, ("missing",))[0] == "ok"]
        for f in files:
            if f not in good:
                cls, detail = verdict.get(f, ("missing", ""))
                print(f"FAIL {f}: {cls} {detail}")
                failures += 1
        with Pool(os.cpu_count() or 1) as pool:
            scores = pool.starmap(score, [(f, out, a.size) for f in good])
        for f, (same_shape, p_ours, p_peer) in zip(good, scores):
            detail = verdict[f][1]
            margin = p_ours - (p_peer - a.slack)
            ok = same_shape and margin >= 0
            worst = margin if worst is None else min(worst, margin)
            print(f"{'ok  ' if ok else 'FAIL'} {os.path.basename(f):45s} ours {p_ours:6.2f} dB  "
                  f"pillow-draft {p_peer:6.2f} dB  ({detail.split(' crop')[0]})")
            failures += not ok
    print(f"quality: {len(files)} images, {failures} failed, worst margin {worst:.2f} dB "
          f"(ours - (pillow draft - {a.slack}))")
    return 1 if failures else 0

if __name__ == "__main__":
    sys.exit(main())
