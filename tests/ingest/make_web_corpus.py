#!/usr/bin/env python3
"""Makes a LAION-like web image corpus from Debian's wallpaper photos.

The wallpapers (mate-backgrounds, gnome-backgrounds, ukui-wallpapers) are
large (2-15 MP); images on the web that datasets are built from are mostly
0.2-0.5 MP JPEGs with some WebP and PNG. This re-encodes the photos at those
sizes with Pillow: each output takes the next source photo (round robin), a
random pixel count in [--min-mp, --max-mp] at the source's aspect ratio, a
format drawn by --mix, JPEG quality 75-92 (a fifth progressive), WebP
quality 75-90, PNG as is; alpha is kept where the source has it (PNG and
WebP only). Deterministic for a given --seed and source set.

Writes DIR/NNNNN-NAME.EXT and DIR/index.tsv with a header:
  file  caption  width  height  format  bytes  source
Running again with the same parameters reuses the folder (params.json).
Used by the fetcher's tests and the ingest benchmarks (issue 10).

usage: make_web_corpus.py --out DIR [--count N] [--seed S] [--mix jpeg:70,webp:20,png:10]
                          [--min-mp 0.2] [--max-mp 0.5] [--jobs N] [SOURCE_DIR...]
Needs Debian's python3-pil; run with /usr/bin/python3. Exits 77 when no
source photo is installed.
"""
import argparse, json, math, os, random, sys
from multiprocessing import Pool

from PIL import Image

DEFAULT_SOURCES = ["/usr/share/backgrounds", "/usr/share/wallpapers"]
EXTS = {".jpg", ".jpeg", ".png", ".webp"}


def sources(dirs):
    found = []
    for d in dirs:
        for root, _, files in os.walk(d):
            for f in files:
                if os.path.splitext(f)[1].lower() in EXTS:
                    found.append(os.path.realpath(os.path.join(root, f)))
    return sorted(set(found))


def plan(a, srcs):
    rng = random.Random(a.seed)
    mix = []
    for part in a.mix.split(","):
        fmt, weight = part.split(":")
        mix += [fmt.strip().lower()] * int(weight)
    jobs = []
    for i in range(a.count):
        src = srcs[i % len(srcs)]
        jobs.append(dict(index=i, src=src, mp=rng.uniform(a.min_mp, a.max_mp), fmt=rng.choice(mix),
                         quality=rng.randint(75, 92), progressive=rng.random() < 0.2, out=a.out))
    return jobs


def make(job):
    im = Image.open(job["src"])
    w0, h0 = im.size
    aspect = w0 / h0
    w = max(16, round(math.sqrt(job["mp"] * 1e6 * aspect)))
    h = max(16, round(w / aspect))
    if im.format == "JPEG":
        im.draft("RGB", (w, h))  # DCT-domain downscale first: the sources are large
    alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    fmt = job["fmt"]
    im = im.convert("RGBA" if alpha and fmt != "jpeg" else "RGB").resize((w, h), Image.LANCZOS)
    name = os.path.splitext(os.path.basename(job["src"]))[0]
    ext = {"jpeg": "jpg", "webp": "webp", "png": "png"}[fmt]
    fname = "%05d-%s.%s" % (job["index"], name, ext)
    path = os.path.join(job["out"], fname)
    if fmt == "jpeg":
        im.save(path, "JPEG", quality=job["quality"], progressive=job["progressive"])
    elif fmt == "webp":
        im.save(path, "WEBP", quality=min(90, job["quality"]))
    else:
        im.save(path, "PNG")
    caption = "a photo: " + name.replace("-", " ").replace("_", " ")
    return "\t".join([fname, caption, str(w), str(h), fmt, str(os.path.getsize(path)), job["src"]])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mix", default="jpeg:70,webp:20,png:10")
    ap.add_argument("--min-mp", type=float, default=0.2)
    ap.add_argument("--max-mp", type=float, default=0.5)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("dirs", nargs="*", default=DEFAULT_SOURCES)
    a = ap.parse_args()
    srcs = sources(a.dirs)
    if not srcs:
        print("make_web_corpus: no wallpaper photos installed (scripts/install-deps.sh --test)", file=sys.stderr)
        return 77
    params = dict(count=a.count, seed=a.seed, mix=a.mix, min_mp=a.min_mp, max_mp=a.max_mp, sources=srcs)
    stamp = os.path.join(a.out, "params.json")
    index = os.path.join(a.out, "index.tsv")
    if os.path.exists(index) and os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f) == params:
                return 0
    os.makedirs(a.out, exist_ok=True)
    with Pool(max(1, a.jobs)) as pool:
        rows = pool.map(make, plan(a, srcs), chunksize=1)
    with open(index + ".tmp", "w") as f:
        f.write("file\tcaption\twidth\theight\tformat\tbytes\tsource\n")
        f.write("\n".join(rows) + "\n")
    os.replace(index + ".tmp", index)
    with open(stamp, "w") as f:
        json.dump(params, f)
    print("make_web_corpus: %d images in %s" % (len(rows), a.out), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
