#!/usr/bin/env python3
"""Integration test of `transfuse plot`: two trainer logs (one with a NaN
step written the way Python writes it, holdout lines, a cut last line) and
two ingest progress logs become one PNG through gnuplot. Checks that it
renders, its size, and known regions: the white background, each run's
colour in the LM loss panel (top left), the failure reasons' colours in the
failure-mix panel (bottom right); --size and --labels; and the failures:
usage errors exit 2, a missing log or one without a usable line exits 3,
no gnuplot on PATH exits 3 and says what to install, and no half-written
picture is left behind.

usage: test_plot.py TRANSFUSE WORKDIR"""
import json, math, os, random, shutil, subprocess, sys

from PIL import Image

T, WORK = sys.argv[1], sys.argv[2]
failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what, file=sys.stderr)
    return cond


def run(*argv, ok=(0,), env=None):
    p = subprocess.run([T, *argv], capture_output=True, text=True, env=env)
    if p.returncode not in ok:
        print(f"exit {p.returncode} from {argv}:\n{p.stderr}", file=sys.stderr)
    return p


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
rnd = random.Random(7)
logs = []
for name, scale in (("base", 1.0), ("wide", 1.4)):
    path = os.path.join(WORK, f"{name}.jsonl")
    with open(path, "w") as f:
        f.write(json.dumps({"step": 0, "val_loss_lm": 6 * scale, "val_loss_diffusion": 1.1}) + "\n")
        for s in range(1, 201):
            d = {"step": s, "loss_lm": 2 + 4 * scale * math.exp(-s / 50) + rnd.gauss(0, 0.1),
                 "loss_diffusion": 0.3 + scale * math.exp(-s / 70) + rnd.gauss(0, 0.03),
                 "lr": 3e-4 * min(1, s / 20), "grad_norm": 1.0, "tokens_per_s": 10000 * scale + rnd.gauss(0, 200)}
            if s % 50 == 0:
                d["val_loss_lm"] = d["loss_lm"]
            line = json.dumps(d)
            if name == "wide" and s == 120:
                line = line.replace(json.dumps(d["loss_diffusion"]), "NaN")  # as Python's json writes it
            f.write(line + "\n")
        f.write('{"step": 201, "loss_lm": 2.1, "loss_diff')  # a line cut by a crash
    logs.append(path)
for name, rate in (("ingest1", 50), ("ingest2", 80)):
    path = os.path.join(WORK, f"{name}.jsonl")
    rows = ok = failed = dns = h404 = b = 0
    with open(path, "w") as f:
        for t in range(1, 91):
            n = rate
            nf = n // 10 if t < 60 else n // 2
            rows += n
            failed += nf
            ok += n - nf
            dns += nf // 2 if t < 60 else nf - 2
            h404 = failed - dns
            b += n * 100000
            f.write(json.dumps({"t": float(t), "time": 1.7e9 + t, "rows": rows, "ok": ok, "failed": failed,
                                "skipped": 0, "failed_by_reason": {"dns": dns, "http_404": h404}, "bytes": b}) + "\n")
    logs.append(path)

out = os.path.join(WORK, "all.png")
p = run("plot", *logs, "--out", out, "--title", "test: two runs, two ingests")
check(p.returncode == 0, "plot exit 0")
check("1 of 202 line(s) skipped" in p.stderr, f"the cut line is counted: {p.stderr}")
im = Image.open(out).convert("RGB")
check(im.size == (1600, 3 * 420 + 40), f"size {im.size}")
W, H = im.size
px = im.load()
check(px[2, 2] == (255, 255, 255) and px[W - 3, H - 3] == (255, 255, 255), "white background")


def count(region, rgb, tol=40):
    x0, y0, x1, y1 = region
    n = 0
    for y in range(y0, y1):
        for x in range(x0, x1):
            c = px[x, y]
            n += all(abs(c[i] - rgb[i]) <= tol for i in range(3))
    return n


blue, red, green = (0x1f, 0x77, 0xb4), (0xd6, 0x27, 0x28), (0x2c, 0xa0, 0x2c)
lm_panel = (0, 40, W // 2, 40 + 420)
check(count(lm_panel, blue) > 800, f"run 1 (blue) drawn in the LM panel: {count(lm_panel, blue)}")
check(count(lm_panel, red) > 800, f"run 2 (red) drawn in the LM panel: {count(lm_panel, red)}")
mix_panel = (W // 2, 40 + 2 * 420, W, H)
check(count(mix_panel, blue) > 200 and count(mix_panel, red) > 200, "failure reasons drawn in the mix panel")
thru_panel = (0, 40 + 2 * 420, W // 2, H)
check(count(thru_panel, green) > 400, "ingest1 (third colour) drawn in the throughput panel")
title = (W // 2 - 200, 0, W // 2 + 200, 30)
check(sum(1 for y in range(0, 30) for x in range(W // 2 - 200, W // 2 + 200) if sum(px[x, y]) < 200) > 50,
      "the title is written")

# one trainer log alone: 2x2, --size and --labels
out2 = os.path.join(WORK, "one.png")
check(run("plot", logs[0], "--out", out2, "--size", "1000x700", "--labels", "first").returncode == 0, "--size")
check(Image.open(out2).size == (1000, 700), "--size honoured")
check(run("plot", logs[0], "--out", os.path.join(WORK, "raw.png"), "--smooth", "0").returncode == 0, "--smooth 0")

# failures
check(run("plot", logs[0], ok=(2,)).returncode == 2, "no --out")
check(run("plot", "--out", out2, ok=(2,)).returncode == 2, "no LOG")
check(run("plot", logs[0], "--out", out2, "--smooth", "1", ok=(2,)).returncode == 2, "--smooth 1")
check(run("plot", logs[0], "--out", out2, "--size", "10x10", ok=(2,)).returncode == 2, "tiny --size")
check(run("plot", os.path.join(WORK, "missing.jsonl"), "--out", out2, ok=(3,)).returncode == 3, "missing log")
junk = os.path.join(WORK, "junk.jsonl")
with open(junk, "w") as f:
    f.write("not json\n{\"other\": 1}\n")
p = run("plot", junk, "--out", os.path.join(WORK, "junk.png"), ok=(3,))
check(p.returncode == 3 and "nothing to draw" in p.stderr, "a log without a usable line")
check(not os.path.exists(os.path.join(WORK, "junk.png")), "no picture for nothing")
env = dict(os.environ, PATH="/nonexistent")
p = run("plot", logs[0], "--out", os.path.join(WORK, "nognuplot.png"), ok=(3,), env=env)
check(p.returncode == 3 and "gnuplot" in p.stderr, f"no gnuplot: {p.stderr}")
check(not [f for f in os.listdir(WORK) if ".tmp." in f], "no temporary picture left behind")

if failures:
    print(f"test_plot: {failures} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("test_plot: all checks passed")
