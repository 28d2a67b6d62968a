#!/usr/bin/env python3
"""Integration test of `transfuse ingest` on real image files made with
Pillow and the real Llama-3 tokenizer.json: records carry the right tokens
(same as `transfuse tokenize`), latents (same as `transfuse vae encode` on
the same image), provenance (SHA-256 of the file, sizes, crop box) and extra
columns; bad rows are counted by class; a second run and a run interrupted
by SIGINT resume without losing or duplicating samples; bad flags exit 2.

usage: test_ingest.py TRANSFUSE TOKENIZER_JSON WORKDIR"""
import base64, csv, hashlib, io, json, os, shutil, signal, struct, subprocess, sys, time

import numpy as np
from PIL import Image

T, TOK, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
if not os.path.exists(TOK):
    print(f"skipped: {TOK} is missing (the tokenizer_fetch_reference fixture did not run)")
    sys.exit(77)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import Checks

checks = Checks("test_ingest")
check = checks.check


def run(*argv, ok=(0,), **kw):
    p = subprocess.run([T, *argv], capture_output=True, **kw)
    if p.returncode not in ok:
        print(f"exit {p.returncode} from {argv}:\n{p.stderr.decode()}", file=sys.stderr)
    return p


shutil.rmtree(WORK, ignore_errors=True)
img_dir = os.path.join(WORK, "images")
os.makedirs(img_dir)
rng = np.random.default_rng(5)


def photo(w, h):
    y, x = np.mgrid[0:h, 0:w]
    r = (127 + 120 * np.sin(x / 37.0)).astype(np.uint8)
    g = (127 + 120 * np.cos(y / 23.0)).astype(np.uint8)
    b = ((x + y) % 256).astype(np.uint8)
    return Image.fromarray(np.dstack([r, g, b]))


good = []
for i, (w, h, fmt) in enumerate([(640, 480, "JPEG"), (480, 640, "JPEG"), (1024, 768, "JPEG"), (300, 300, "PNG"),
                                 (800, 600, "WEBP"), (512, 400, "PNG"), (700, 500, "WEBP"), (333, 999, "JPEG")]):
    p = os.path.join(img_dir, f"img{i}.{fmt.lower()}")
    im = photo(w, h)
    if fmt == "PNG" and i == 5:
        im = im.convert("RGBA")
    im.save(p, fmt, quality=90) if fmt != "PNG" else im.save(p, fmt)
    good.append(p)
with open(os.path.join(img_dir, "img2.jpeg"), "rb") as f:
    data = f.read()
with open(os.path.join(img_dir, "truncated.jpeg"), "wb") as f:
    f.write(data[:200])
with open(os.path.join(img_dir, "page.jpg"), "w") as f:
    f.write("<html><body>404 not found</body></html>")

captions = ["A red, \"quoted\" sunset", "Ünïcödé caption 東京 🐱", "multi\nline caption", "plain one",
            "tabs\tand  spaces", "numbers 12345 and 3.14", "don't stop", "last good one"]
manifest = os.path.join(WORK, "manifest.csv")
with open(manifest, "w", newline="") as f:
    wr = csv.writer(f)
    wr.writerow(["url", "caption", "license"])
    for i, p in enumerate(good):
        wr.writerow([os.path.relpath(p, WORK) if i % 2 else p, captions[i], f"cc-{i}"])
    wr.writerow([os.path.join(img_dir, "truncated.jpeg"), "broken", "x"])
    wr.writerow([os.path.join(img_dir, "page.jpg"), "html", "x"])
    wr.writerow([os.path.join(img_dir, "missing.jpg"), "missing", "x"])

vae = os.path.join(WORK, "vae")
check(run("vae", "init", "--layout", "tiny", "--seed", "3", "--out", vae).returncode == 0, "vae init")
out = os.path.join(WORK, "ds")
p = run("ingest", "--manifest", manifest, "--out", out, "--tokenizer", TOK, "--vae", vae, "--threads", "2",
        "--shard-records", "3")
check(p.returncode == 0, "ingest exit 0")
stats = json.load(open(os.path.join(out, "ingest-stats.json")))
check(stats["rows"] == 11 and stats["written"] == 8 and stats["failed"] == 3, f"stats {stats}")
check(stats["failures"].get("not_image") == 1 and stats["failures"].get("read") == 1 and
      (stats["failures"].get("truncated", 0) + stats["failures"].get("corrupt", 0)) == 1, f"classes {stats}")
err = p.stderr.decode()
check("page.jpg" in err and "missing.jpg" in err and "truncated.jpeg" in err, "failed rows named: " + err)
check(run("shards", "verify", out).returncode == 0, "verify")
mf = json.load(open(os.path.join(out, "manifest.json")))
check(mf["facts"]["latent"] == {"dtype": "bf16", "shape": [4, 32, 32]}, f"facts {mf['facts']}")
check(len(mf["facts"]["tokenizer"]["id"]) == 64 and len(mf["facts"]["vae"]["id"]) == 64, "identities recorded")

recs = [json.loads(l) for l in run("shards", "cat", out).stdout.decode().splitlines()]
check(len(recs) == 8, f"{len(recs)} records")
by_url = {r["provenance"]["source_url"]: r for r in recs}
# Tokens: the same as `transfuse tokenize --bos` gives for the caption (one
# caption per input line, so only the captions without a newline).
plain = [c for c in captions if "\n" not in c]
out_lines = run("tokenize", "--tokenizer", TOK, "--bos", input="".join(c + "\n" for c in plain).encode()).stdout
tok_ids = dict(zip(plain, (json.loads(l) for l in out_lines.decode().splitlines())))
check(len(tok_ids) == len(plain), "tokenize printed one line per caption")
for i, path in enumerate(good):
    url = os.path.relpath(path, WORK) if i % 2 else path
    url = os.path.join(WORK, url) if i % 2 else url
    r = by_url.get(url)
    check(r is not None, f"record for {url}")
    if r is None:
        continue
    check(r["caption"] == captions[i], f"caption {i}")
    check(r["extra"] == {"license": f"cc-{i}"}, f"extra {i}")
    check(base64.b64decode(r["provenance"]["sha256"]) == hashlib.sha256(open(path, "rb").read()).digest(),
          f"sha256 {i}")
    w, h = Image.open(path).size
    check((r["provenance"]["original_width"], r["provenance"]["original_height"]) == (w, h), f"size {i}")
    c = r["provenance"]["crop"]
    side = min(w, h)
    check(abs(c.get("width", 0) - side) <= 2 and abs(c.get("height", 0) - side) <= 2, f"crop {i}: {c}")
    check(r["tokens"][0] == 128000, f"BOS {i}")
    if captions[i] in tok_ids:
        check(r["tokens"] == tok_ids[captions[i]], f"tokens {i}: {r['tokens']} vs {tok_ids[captions[i]]}")
    lm = r["latent_mean"]
    check(lm["dtype"] == "DTYPE_BF16" and lm["shape"] == [4, 32, 32], f"latent {i}")

# Latents: the same as `transfuse vae encode` of the same image (bf16 rounding).
st = os.path.join(WORK, "one.safetensors")
if run("vae", "encode", "--vae", vae, "--out", st, good[3]).returncode == 0:
    raw = open(st, "rb").read()
    (hlen,) = struct.unpack_from("<Q", raw, 0)
    hdr = json.loads(raw[8:8 + hlen])
    a, b = hdr["mean"]["data_offsets"]
    want = np.frombuffer(raw[8 + hlen + a:8 + hlen + b], dtype="<f4")
    got16 = np.frombuffer(base64.b64decode(by_url[good[3]]["latent_mean"]["data"]), dtype="<u2")
    got = (got16.astype(np.uint32) << 16).view(np.float32)
    rel = float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-12))
    print(f"latent mean vs vae encode: max relative difference {rel:.2e}")
    check(rel < 1e-2, f"latent differs from vae encode: {rel}")
else:
    check(False, "vae encode failed")

# A second run resumes: nothing new, nothing duplicated.
p = run("ingest", "--manifest", manifest, "--out", out, "--tokenizer", TOK, "--vae", vae)
s2 = json.load(open(os.path.join(out, "ingest-stats.json")))
check(s2["written"] == 0 and s2["skipped_existing"] == 8, f"resume stats {s2}")

# Failure limits: the run is done either way and its stats are written; the
# exit status is 1 when more rows failed than --max-failures allows or the
# share of failed rows (of the rows seen, 3 of 11 here) is above
# --max-failure-rate. Also `--opt=value` and `--threads 0` (all CPUs).
base = ["ingest", "--manifest", manifest, "--out", out, "--tokenizer", TOK, "--vae", vae]
for extra, want in ((["--max-failures", "2"], 1), (["--max-failures=3", "--threads", "0"], 0),
                    (["--max-failure-rate", "0.25"], 1), (["--max-failure-rate=0.3"], 0)):
    os.unlink(os.path.join(out, "ingest-stats.json"))
    p = run(*base, *extra, ok=(want,))
    check(p.returncode == want, f"{extra}: exit {p.returncode}, want {want}")
    sl = json.load(open(os.path.join(out, "ingest-stats.json")))
    check(sl["failed"] == 3 and sl["rows"] == 11, f"{extra}: stats written {sl}")
    check(("failure limit" in p.stderr.decode()) == (want == 1), f"{extra}: limit named: {p.stderr.decode()}")
p = run("ingest", f"--manifest={manifest}", f"--out={out}", f"--tokenizer={TOK}", f"--vae={vae}", "--batch=2")
check(p.returncode == 0, "--opt=value: " + p.stderr.decode())

# Keys are unique per row and deterministic: the same image with two captions
# (and a repeated row) gives three records with three keys, the same keys in
# another run of the same manifest, and a rerun adds nothing. A key column
# with a repeated key gives one record and one counted duplicate_key failure.
dup = os.path.join(WORK, "dup.tsv")
with open(dup, "w") as f:
    f.write("url\tcaption\n")
    f.write(f"{good[0]}\ta cat on a mat\n{good[0]}\ta mat under a cat\n{good[0]}\ta cat on a mat\n")
    f.write(f"{good[1]}\tanother image\n")
keys_of = lambda d: [json.loads(l)["key"] for l in run("shards", "cat", d, "--fields", "key").stdout.decode().splitlines()]
out_dup, out_dup2 = os.path.join(WORK, "ds_dup"), os.path.join(WORK, "ds_dup2")
for d in (out_dup, out_dup2):
    check(run("ingest", "--manifest", dup, "--out", d, "--tokenizer", TOK, "--vae", vae).returncode == 0, "dup ingest")
k1, k2 = keys_of(out_dup), keys_of(out_dup2)
check(len(k1) == 4 and len(set(k1)) == 4, f"one key per row: {k1}")
check(k1 == k2, f"keys deterministic across runs: {k1} vs {k2}")
p = run("shards", "verify", out_dup)
check(p.returncode == 0, "verify of the duplicate-image dataset: " + p.stdout.decode() + p.stderr.decode())
run("ingest", "--manifest", dup, "--out", out_dup, "--tokenizer", TOK, "--vae", vae)
s_dup = json.load(open(os.path.join(out_dup, "ingest-stats.json")))
check(s_dup["written"] == 0 and s_dup["skipped_existing"] == 4 and len(keys_of(out_dup)) == 4, f"rerun {s_dup}")
dupk = os.path.join(WORK, "dupkey.tsv")
with open(dupk, "w") as f:
    f.write("url\tcaption\tid\n")
    f.write(f"{good[0]}\tfirst\tsame\n{good[1]}\tsecond\tsame\n{good[2]}\tthird\tother\n")
out_dupk = os.path.join(WORK, "ds_dupk")
p = run("ingest", "--manifest", dupk, "--out", out_dupk, "--tokenizer", TOK, "--vae", vae, "--key-col", "id")
s_dupk = json.load(open(os.path.join(out_dupk, "ingest-stats.json")))
check(sorted(keys_of(out_dupk)) == ["other", "same"], f"duplicate key column: {keys_of(out_dupk)}")
check(s_dupk["written"] == 2 and s_dupk["failures"].get("duplicate_key") == 1, f"duplicate key counted: {s_dupk}")
check("line 3" in p.stderr.decode() and "line 2" in p.stderr.decode(), "duplicate names both lines: " +
      p.stderr.decode())

# Interrupted run: SIGINT mid-way, then resume; every key exactly once.
big = os.path.join(WORK, "big.tsv")
with open(big, "w") as f:
    f.write("url\tcaption\tkey\n")
    for k in range(80):
        f.write(f"{good[k % len(good)]}\tcopy {k}\tk{k:03d}\n")
out2 = os.path.join(WORK, "ds2")
args = ["ingest", "--manifest", big, "--out", out2, "--tokenizer", TOK, "--vae", vae, "--key-col", "key",
        "--shard-records", "4", "--batch", "2", "--threads", "1"]
proc = subprocess.Popen([T, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
deadline = time.time() + 60
while time.time() < deadline and proc.poll() is None:
    if os.path.exists(os.path.join(out2, "manifest.json")):
        proc.send_signal(signal.SIGINT)
        break
    time.sleep(0.05)
proc.communicate(timeout=120)
check(proc.returncode in (0, 130), f"interrupted ingest exit {proc.returncode}")
p = run(*args)
keys = [json.loads(l)["key"] for l in run("shards", "cat", out2, "--fields", "key").stdout.decode().splitlines()]
check(sorted(keys) == [f"k{k:03d}" for k in range(80)], f"after resume: {len(keys)} keys, {len(set(keys))} distinct")
check(run("shards", "verify", out2).returncode == 0, "verify after resume")

# JSON-lines manifests: non-string values kept as JSON text in extra.
jl = os.path.join(WORK, "rows.jsonl")
with open(jl, "w") as f:
    f.write(json.dumps({"url": good[0], "caption": "from jsonl", "width_hint": 640, "tag": "a"}) + "\n\n")
    f.write(json.dumps({"url": good[4], "caption": "second", "tag": "b"}) + "\n")
out3 = os.path.join(WORK, "ds3")
check(run("ingest", "--manifest", jl, "--out", out3, "--tokenizer", TOK, "--vae", vae).returncode == 0, "jsonl ingest")
rows = [json.loads(l) for l in run("shards", "cat", out3, "--fields", "caption,extra").stdout.decode().splitlines()]
check(rows == [{"caption": "from jsonl", "extra": {"width_hint": "640", "tag": "a"}},
               {"caption": "second", "extra": {"tag": "b"}}], f"jsonl rows {rows}")
bad_csv = os.path.join(WORK, "bad.csv")
with open(bad_csv, "w") as f:
    f.write('url,caption\n"unterminated,x\n')
p = run("ingest", "--manifest", bad_csv, "--out", out3, "--tokenizer", TOK, "--vae", vae, ok=(3,))
check(p.returncode == 3 and "bad.csv" in p.stderr.decode() and "unterminated" in p.stderr.decode(),
      "malformed CSV named: " + p.stderr.decode())

# Usage errors exit 2 before any work (the output folder is not even made);
# inputs that cannot be used exit 3 (could not run), naming the problem.
fresh = os.path.join(WORK, "never_made")
for argv in (["ingest", "--manifest", manifest, "--out", fresh, "--tokenizer", TOK],
             ["ingest", "--manifest", manifest, "--out", fresh, "--tokenizer", TOK, "--vae", vae, "--latent-dtype", "f8"],
             ["ingest", "--manifest", manifest, "--out", fresh, "--tokenizer", TOK, "--vae", vae, "--batch", "0"],
             ["ingest", "--manifest", manifest, "--out", fresh, "--tokenizer", TOK, "--vae", vae, "--bogus"],
             ["ingest", "--manifest", manifest, "--out", fresh, "--tokenizer", TOK, "--vae", vae, "--max-failure-rate", "2"],
             ["ingest", "--manifest", manifest, "--out", fresh, "--tokenizer", TOK, "--vae", vae, "--max-failures=-1"],
             ["ingest", "--manifest", manifest, "--out", fresh, "--tokenizer", TOK, "--vae", vae, "extra-operand"],
             ["ingest", "--manifest", manifest, "--out", fresh, "--tokenizer", TOK, "--vae", vae, "--threads"]):
    p = run(*argv, ok=(2,))
    check(p.returncode == 2 and p.stdout == b"", f"usage error {argv}: exit {p.returncode}")
    check(not os.path.exists(fresh), f"{argv}: nothing written")
p = run("ingest", "--manifest", "/nonexistent.tsv", "--out", out, "--tokenizer", TOK, "--vae", vae, ok=(3,))
check(p.returncode == 3 and "nonexistent.tsv" in p.stderr.decode(), "missing manifest reported")
# Other tokenizer settings into the same dataset are refused.
p = run("ingest", "--manifest", manifest, "--out", out, "--tokenizer", TOK, "--vae", vae, "--latent-dtype", "f32",
        ok=(3,))
check(p.returncode == 3 and "dtype" in p.stderr.decode(), "facts mismatch refused: " + p.stderr.decode())

shutil.rmtree(WORK, ignore_errors=True)
checks.finish()
