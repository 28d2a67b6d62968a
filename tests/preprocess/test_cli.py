#!/usr/bin/env python3
"""The command-line rules on every preprocess command (`preprocess crop`,
`preprocess bench`, `tokenize`, `vae init|encode|decode`):
  - `--opt=value` works like `--opt value`, and options may follow operands;
  - an unknown option, a missing value or a bad value exits 2 before any
    work: nothing on stdout, no output file or folder made;
  - `--threads 0` means all CPUs;
  - an input that cannot be used (a missing tokenizer, VAE or file) exits 3.

usage: test_cli.py TRANSFUSE TOKENIZER_JSON WORKDIR"""
import os, shutil, subprocess, sys

import numpy as np
from PIL import Image

T, TOK, WORK = sys.argv[1:4]
if not os.path.exists(TOK):
    print(f"skipped: {TOK} is missing (the tokenizer_fetch_reference fixture did not run)")
    sys.exit(77)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import Checks

checks = Checks("test_cli (preprocess)")
check = checks.check


def run(*argv, stdin=b""):
    return subprocess.run([T, *argv], input=stdin, capture_output=True)


def expect(argv, want, stdin=b"", made=None):
    """Runs argv, checks the exit status; with want 2 also that stdout is
    empty and that `made` (a path) was not created."""
    p = run(*argv, stdin=stdin)
    ok = p.returncode == want
    if want == 2:
        ok = ok and p.stdout == b"" and (made is None or not os.path.exists(made))
    check(ok, f"{' '.join(argv)}: exit {p.returncode} (want {want}), stdout {p.stdout[:80]!r}, "
              f"stderr {p.stderr.decode()[-300:]}")
    return p


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
img = os.path.join(WORK, "a.jpg")
y, x = np.mgrid[0:200, 0:300]
Image.fromarray(np.dstack([x % 256, y % 256, (x + y) % 256]).astype(np.uint8)).save(img)
nope = os.path.join(WORK, "never")  # an output that must never appear

# preprocess crop
out = os.path.join(WORK, "crops")
p = expect(["preprocess", "crop", img, "--out=" + out, "--size=64", "--threads=0"], 0)
check(p.stdout.decode().startswith(img + "\tok"), f"crop verdict: {p.stdout!r}")
check(Image.open(os.path.join(out, "a.jpg.png")).size == (64, 64), "crop wrote a 64x64 PNG")
expect(["preprocess", "crop", img, "--out", nope, "--bogus"], 2, made=nope)
expect(["preprocess", "crop", img, "--out", nope, "--size"], 2, made=nope)
expect(["preprocess", "crop", img, "--out", nope, "--max-pixels", "12X"], 2, made=nope)
expect(["preprocess", "crop", img, "--out", nope, "--threads", "-1"], 2, made=nope)
expect(["preprocess", "crop", img], 2)
p = expect(["preprocess", "crop", "--out", out, "--max-pixels=59K", img], 0)  # 59,000 < 60,000 < 59Ki
check("too_large" in p.stdout.decode(), f"--max-pixels=59K (decimal) refuses 200x300: {p.stdout!r}")

# preprocess bench
p = expect(["preprocess", "bench", img, "--reps=1", "--threads", "0", "--no-floor"], 0)
check(b"images_per_s" in p.stdout, f"bench output {p.stdout!r}")
expect(["preprocess", "bench", img, "--reps", "1", "--bogus"], 2)
expect(["preprocess", "bench", img, "--reps"], 2)
expect(["preprocess", "bench", os.path.join(WORK, "missing.jpg"), "--reps", "1"], 3)

# tokenize
p = expect(["tokenize", "--bos", "--tokenizer=" + TOK, "--threads=0"], 0, stdin=b"hello world\n")
check(p.stdout.startswith(b"[128000,"), f"tokenize output {p.stdout!r}")
expect(["tokenize", "--tokenizer", TOK, "--bogus"], 2, stdin=b"x\n")
expect(["tokenize", "--tokenizer"], 2, stdin=b"x\n")
expect(["tokenize", "--tokenizer", TOK, "--threads", "x"], 2, stdin=b"x\n")
expect(["tokenize", "--tokenizer", TOK, "operand"], 2, stdin=b"x\n")
expect(["tokenize", "--tokenizer", os.path.join(WORK, "missing.json")], 3, stdin=b"x\n")

# vae init, encode, decode
vae = os.path.join(WORK, "vae")
expect(["vae", "init", "--layout=tiny", "--seed=4", f"--out={vae}"], 0)
check(os.path.exists(os.path.join(vae, "config.json")), "vae init wrote config.json")
expect(["vae", "init", "--layout", "tiny", "--out", nope, "--bogus"], 2, made=nope)
expect(["vae", "init", "--layout", "nosuch", "--out", nope], 2, made=nope)
expect(["vae", "init", "--layout", "tiny", "--out", nope, "extra"], 2, made=nope)
lat = os.path.join(WORK, "lat.safetensors")
expect(["vae", "encode", img, "--vae=" + vae, "--out", lat, "--threads=0", "--size=64"], 0)
check(os.path.exists(lat), "vae encode wrote its file")
nope_file = os.path.join(WORK, "never.safetensors")
expect(["vae", "encode", img, "--vae", vae, "--out", nope_file, "--bogus"], 2, made=nope_file)
expect(["vae", "encode", img, "--vae", vae, "--out", nope_file, "--size", "60"], 2, made=nope_file)
expect(["vae", "encode", img, "--vae", os.path.join(WORK, "novae"), "--out", nope_file], 3, made=nope_file)
pngs = os.path.join(WORK, "decoded")
expect(["vae", "decode", lat, "--vae", vae, f"--out={pngs}", "--threads", "0"], 0)
check(Image.open(os.path.join(pngs, "000000.png")).size == (64, 64), "vae decode wrote a 64x64 PNG")
expect(["vae", "decode", lat, "--vae", vae, "--out", nope, "--bogus"], 2, made=nope)
expect(["vae", "decode", lat, "--vae", vae, "--out", nope, "--tensor", "nosuch"], 3, made=nope)

shutil.rmtree(WORK, ignore_errors=True)
checks.finish()
