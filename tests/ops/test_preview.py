#!/usr/bin/env python3
"""Integration test of `transfuse shards preview`: a dataset made with
`shards import` whose records hold PNG crops, a raw RGB crop, a corrupt PNG
and no image, with UTF-8 captions (CJK, emoji, a long one that must wrap
and be cut); and one with VAE latents. Checks the sheet's size against the
layout it reports, known pixel regions (a solid red crop, the raw crop's
blue and green halves, the grey cell of a record without a picture, dark
text under each cell), that `--vae` decodes exactly what `transfuse vae
decode` writes for the same latent, that a VAE of another identity is
refused, the same sheet from a topic of the embedded broker, and usage
errors.

usage: test_preview.py TRANSFUSE WORKDIR"""
import base64, io, json, os, shutil, signal, struct, subprocess, sys, time

import numpy as np
from PIL import Image

T, WORK = sys.argv[1], sys.argv[2]
failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what, file=sys.stderr)
    return cond


def run(argv, ok=(0,), **kw):
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    if p.returncode not in ok:
        print(f"exit {p.returncode} from {argv}:\n{p.stderr}", file=sys.stderr)
    return p


PV = [T, "shards", "preview"]


def preview(*args, ok=(0,)):
    return run(PV + list(args), ok=ok)


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)


def png_b64(arr):
    b = io.BytesIO()
    Image.fromarray(arr).save(b, "PNG")
    return base64.b64encode(b.getvalue()).decode()


RED = (220, 20, 30)
recs = []
caps = ["A red square, for the pixel check",
        "Ünïcödé 東京 🐱 and a long tail that must wrap over several lines and be cut with an ellipsis at the end "
        "of the cell because it is far too long",
        "multi\nline", "", "raw rgb", "corrupt png", "no image"]
for i, cap in enumerate(caps):
    r = {"key": f"sample-{i:04d}", "caption": cap}
    if i == 0:
        a = np.zeros((256, 256, 3), np.uint8)
        a[...] = RED
        r["image"] = {"format": "png", "width": 256, "height": 256, "data": png_b64(a)}
    elif i < 4:
        y, x = np.mgrid[0:256, 0:256]
        a = np.dstack([x, y, (x + y) // 2]).astype(np.uint8)
        r["image"] = {"format": "png", "width": 256, "height": 256, "data": png_b64(a)}
    elif i == 4:
        a = np.zeros((64, 64, 3), np.uint8)
        a[:, :32] = (0, 0, 255)
        a[:, 32:] = (0, 200, 0)
        r["image"] = {"format": "rgb8", "width": 64, "height": 64, "data": base64.b64encode(a.tobytes()).decode()}
    elif i == 5:
        r["image"] = {"format": "png", "width": 256, "height": 256,
                      "data": base64.b64encode(b"\x89PNG\r\n\x1a\nbroken").decode()}
    recs.append(json.dumps(r))
ds = os.path.join(WORK, "ds")
check(run([T, "shards", "import", "--out", ds], input="\n".join(recs) + "\n").returncode == 0, "import")

sheet = os.path.join(WORK, "sheet.png")
p = preview(ds, "--out", sheet, "--json", "--columns", "4")
check(p.returncode == 0, "preview exit 0")
lay = json.loads(p.stdout) if p.returncode == 0 else {"cells": []}
cells = {c["key"]: c for c in lay["cells"]}
check(len(cells) == 7 and [c["key"] for c in lay["cells"]] == [f"sample-{i:04d}" for i in range(7)],
      "one cell per record, in order")
im = Image.open(sheet).convert("RGB")
check(im.size == (lay.get("width"), lay.get("height")), f"size {im.size} as reported {lay.get('width')}")
check(im.size == (2 * 16 + 4 * 192 + 3 * 12, 44 + 16 + 2 * (192 + 6 + 18 + 60) + 12), f"size from the layout {im.size}")
a = np.asarray(im).astype(int)


def region(c, dx0=0.25, dx1=0.75, dy0=0.25, dy1=0.75):
    x, y, s = c["x"], c["y"], c["size"]
    return a[y + int(s * dy0):y + int(s * dy1), x + int(s * dx0):x + int(s * dx1)]


c0 = cells.get("sample-0000")
if check(c0 and c0["source"] == "png", "cell 0 from the stored PNG"):
    check(np.abs(region(c0) - RED).max() <= 2, "cell 0 is the red crop")
    under = a[c0["y"] + c0["size"] + 6:c0["y"] + c0["size"] + 6 + 18 + 45, c0["x"]:c0["x"] + c0["size"]]
    check((under.sum(axis=2) < 300).sum() > 100, "key and caption written under cell 0")
c4 = cells.get("sample-0004")
if check(c4 and c4["source"] == "rgb8", "cell 4 from the rgb8 crop"):
    check(np.abs(region(c4, 0.1, 0.4) - (0, 0, 255)).max() <= 2, "raw crop: blue left half")
    check(np.abs(region(c4, 0.6, 0.9) - (0, 200, 0)).max() <= 2, "raw crop: green right half")
for k in ("sample-0005", "sample-0006"):
    c = cells.get(k)
    if check(c and c["source"] == "", f"{k} has no picture"):
        check(np.abs(region(c, 0.5, 0.95, 0.6, 0.95) - 237).max() <= 1, f"{k}: the grey cell")
        top = region(c, 0.02, 0.98, 0.02, 0.3)
        check((top.sum(axis=2) < 500).sum() > 50, f"{k}: says why")
c1 = cells.get("sample-0001")
cap = a[c1["y"] + c1["size"] + 24:c1["y"] + c1["size"] + 24 + 60, c1["x"]:c1["x"] + c1["size"]]
rows_with_text = [(r.sum(axis=1) < 600).any() for r in cap]
check(sum(rows_with_text) > 35, "the long caption wraps over several lines")

# --limit, and a folder that is not a dataset
p = preview(ds, "--out", os.path.join(WORK, "two.png"), "--limit", "2", "--json")
check(p.returncode == 0 and len(json.loads(p.stdout)["cells"]) == 2, "--limit 2")
check(preview(os.path.join(WORK, "nothing"), "--out", os.path.join(WORK, "n.png"), ok=(3,)).returncode == 3,
      "no dataset: exit 3")
check(preview(ds, ok=(2,)).returncode == 2, "no --out")
check(preview("--out", sheet, ok=(2,)).returncode == 2, "no PATH")
check(preview(ds, "--out", sheet, "--size", "5", ok=(2,)).returncode == 2, "bad --size")

# ---- latents through the VAE: exactly what `vae decode` writes ----
vae = os.path.join(WORK, "vae")
check(run([T, "vae", "init", "--layout", "tiny", "--seed", "3", "--out", vae]).returncode == 0, "vae init")
y, x = np.mgrid[0:256, 0:256]
Image.fromarray(np.dstack([x, y, (x * y) % 256]).astype(np.uint8)).save(os.path.join(WORK, "a.png"))
Image.fromarray(np.full((300, 400, 3), (200, 50, 50), np.uint8)).save(os.path.join(WORK, "b.png"))
enc = os.path.join(WORK, "enc.safetensors")
check(run([T, "vae", "encode", "--vae", vae, "--out", enc, os.path.join(WORK, "a.png"),
           os.path.join(WORK, "b.png")]).returncode == 0, "vae encode")


def st_read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    d = b[8 + n:]
    out = {k: np.frombuffer(d[v["data_offsets"][0]:v["data_offsets"][1]], np.float32).reshape(v["shape"])
           for k, v in h.items() if k != "__metadata__"}
    return out, h.get("__metadata__", {})


t, meta = st_read(enc)
cfg = json.load(open(os.path.join(vae, "config.json")))
scale, shift = cfg["scaling_factor"], cfg.get("shift_factor") or 0.0
lat = [json.dumps({"key": f"lat-{i}", "caption": f"latent {i}",
                   "latent_mean": {"dtype": "DTYPE_F32", "shape": list(m.shape),
                                   "data": base64.b64encode(m.astype("<f4").tobytes()).decode()}})
       for i, m in enumerate(t["mean"])]
vds = os.path.join(WORK, "vds")
check(run([T, "shards", "import", "--out", vds, "--vae-id", meta["vae_identity"]],
          input="\n".join(lat) + "\n").returncode == 0, "import latents")
z = ((t["mean"] - shift) * scale).astype(np.float32)
hdr = json.dumps({"latent": {"dtype": "F32", "shape": list(z.shape), "data_offsets": [0, z.nbytes]}}).encode()
zf = os.path.join(WORK, "z.safetensors")
open(zf, "wb").write(struct.pack("<Q", len(hdr)) + hdr + z.tobytes())
dec = os.path.join(WORK, "dec")
check(run([T, "vae", "decode", "--vae", vae, "--out", dec, zf]).returncode == 0, "vae decode (the peer)")
vsheet = os.path.join(WORK, "vsheet.png")
p = preview(vds, "--vae", vae, "--size", "256", "--out", vsheet, "--json")
if check(p.returncode == 0, "preview --vae"):
    vl = json.loads(p.stdout)
    va = np.asarray(Image.open(vsheet).convert("RGB")).astype(int)
    for i, c in enumerate(vl["cells"]):
        ref = np.asarray(Image.open(os.path.join(dec, f"{i:06d}.png")).convert("RGB")).astype(int)
        got = va[c["y"]:c["y"] + 256, c["x"]:c["x"] + 256]
        diff = np.abs(got - ref).max()
        print(f"--vae cell {i}: max difference to vae decode {diff}")
        check(c["source"] == "vae" and diff == 0, f"--vae cell {i} equals vae decode")
vae2 = os.path.join(WORK, "vae2")
run([T, "vae", "init", "--layout", "tiny", "--seed", "4", "--out", vae2])
p = preview(vds, "--vae", vae2, "--out", os.path.join(WORK, "wrong.png"), ok=(2,))
check(p.returncode == 2 and "decoding would show noise" in p.stderr, "another VAE is refused")
check(not os.path.exists(os.path.join(WORK, "wrong.png")), "no sheet for a refused VAE")

# ---- the same records on a topic of the embedded broker ----
bs_file = os.path.join(WORK, "bs")
broker = subprocess.Popen([T, "broker", "--topic", "crops:2", "--bootstrap-file", bs_file],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        if os.path.exists(bs_file):
            break
        time.sleep(0.1)
    url = f"kafka://{open(bs_file).read().strip()}/crops"
    check(run([T, "shards", "publish", ds, "--to", url]).returncode == 0, "publish")
    tsheet = os.path.join(WORK, "topic.png")
    p = preview(url, "--out", tsheet, "--json", "--columns", "4")
    if check(p.returncode == 0, "preview of a topic"):
        tl = json.loads(p.stdout)
        check(sorted(c["key"] for c in tl["cells"]) == sorted(cells), "every record of the topic")
        ta = np.asarray(Image.open(tsheet).convert("RGB")).astype(int)
        red = [c for c in tl["cells"] if c["key"] == "sample-0000"][0]
        x, y, s = red["x"], red["y"], red["size"]
        check(np.abs(ta[y + s // 4:y + 3 * s // 4, x + s // 4:x + 3 * s // 4] - RED).max() <= 2, "red crop from the topic")
finally:
    broker.send_signal(signal.SIGTERM)
    broker.wait(timeout=20)

if failures:
    print(f"test_preview: {failures} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("test_preview: all checks passed")
