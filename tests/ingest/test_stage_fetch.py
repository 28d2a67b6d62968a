#!/usr/bin/env python3
"""Integration test of stage 1 (ingest_stage_fetch, through
stage_fetch_driver) on loopback: Debian's nginx serving wallpaper photos
re-encoded at web sizes and fault_server.py for what goes wrong. Every row
of the manifest must end as the outcome expected for it (written, or one
failure with its reason and transient flag in JOB.failures.jsonl and the
counts in JOB.fetch.json); the records must pass `shards verify`; each
crop must equal `transfuse preprocess crop` of the same file and the
tokens `transfuse tokenize --bos` of the caption; a rerun writes nothing
twice; --retry-failed redoes only transient failures and adds the
successes in a new shard without touching the first; PNG crops decode to
the same pixels.

usage: test_stage_fetch.py TRANSFUSE DRIVER TOKENIZER_JSON WORKDIR"""
import base64, hashlib, json, os, shutil, subprocess, sys

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "fetch"))
from checks import Checks  # noqa: E402
from servers import FaultServer, Nginx, web_test_start  # noqa: E402

T, DRIVER, TOK, WORK = sys.argv[1:5]
checks = Checks("test_stage_fetch")
check = checks.check
corpus, files = web_test_start(TOK, WORK, 6)
jpeg = next(n for n in files if n.endswith(".jpg"))
fault_dir = os.path.join(WORK, "fault")
os.makedirs(fault_dir)
shutil.copy(os.path.join(corpus, jpeg), os.path.join(fault_dir, "img.jpg"))
with open(os.path.join(fault_dir, "bad.png"), "wb") as f:  # a PNG whose IDAT is no zlib stream: corrupt
    import struct, zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", bytes(50)) + chunk(b"IEND", b""))


def run(*argv, ok=(0,), **kw):
    p = subprocess.run(list(argv), capture_output=True, **kw)
    if p.returncode not in ok:
        print(f"exit {p.returncode} from {argv}:\n{p.stderr.decode()[-3000:]}", file=sys.stderr)
    return p


def records(path):
    p = run(T, "shards", "cat", path)
    return [json.loads(line) for line in p.stdout.decode().splitlines()]


def failures(stats_dir, job):
    with open(os.path.join(stats_dir, job + ".failures.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


with Nginx(corpus, os.path.join(WORK, "nginx")) as ngx, FaultServer(fault_dir, also=["127.0.0.2"]) as fs:
    N = f"http://127.0.0.1:{ngx.port}"
    F = fs.url
    # (url, caption, expected outcome, transient); "ok" rows are written
    rows = [(f"{N}/{n}", f"photo number {i}: {n}", "ok", None) for i, n in enumerate(files)]
    rows += [
        (f"{N}/no-such.jpg", "missing", "http_404", False),
        (F("/retry-after/r1?n=1&v=1"), "asked to wait a second", "ok", None),
        (F("/flaky/f1?n=1"), "fails once", "ok", None),
        (F("/flaky/g1?n=6"), "fails six times (two runs), then works", "http_500", True),
        (F("/image/img.jpg?ct=text/html"), "an image labelled as HTML", "ok", None),
        (F("/truncated/img.jpg"), "cut short", "truncated", True),
        (F("/html"), "a web page", "not_image", False),
        (F("/loop/a"), "a redirect loop", "redirect_loop", False),
        (F("/endless?cl=99999999999"), "too big", "too_large", False),
        (F("/robots/img.jpg?h=noai"), "opted out", "opted_out", False),
        (F("/robots/img.jpg?h=otherbot:%20noai"), "opted out of another bot only", "ok", None),
        (F("/image/img.jpg", host="127.0.0.2"), "a private address", "private_address", False),
        (F("/image/bad.png"), "not decodable", "corrupt", False),
        (F("/status/503"), "always down", "http_503", True),
    ]
    manifest = os.path.join(WORK, "web.tsv")
    with open(manifest, "w") as f:
        f.write("url\tcaption\tid\n")
        for i, (u, cap, _, _) in enumerate(rows):
            f.write(f"{u}\t{cap}\trow{i}\n")
        f.write("only two\tfields\n")  # a bad row: line len(rows) + 2
    bad_line = len(rows) + 2
    out = os.path.join(WORK, "crops")
    stats_dir = os.path.join(out, "ingest-jobs")
    job = "web.tsv.000000"
    base = [DRIVER, "--manifest", manifest, "--tokenizer", TOK, "--job", job, "--out", out, "--identity", "web.tsv",
            "--allow-address", "127.0.0.1/32", "--threads", "2", "--max-in-flight", "8"]

    # 1. the job: every row's outcome
    p = run(*base)
    check(p.returncode == 0, f"driver exit {p.returncode}")
    st = json.loads(p.stdout.decode().splitlines()[-1]) if p.returncode == 0 else {}
    n_ok = sum(1 for r in rows if r[2] == "ok")
    n_rows = len(rows) + 1
    check(st.get("attempted") == n_rows, f"attempted {st.get('attempted')}, want {n_rows}")
    check(st.get("succeeded") == n_ok, f"succeeded {st.get('succeeded')}, want {n_ok}")
    want_fail = {}
    for r in rows:
        if r[2] != "ok":
            want_fail[r[2]] = want_fail.get(r[2], 0) + 1
    want_fail["bad_row"] = 1
    check(st.get("failures") == want_fail, f"failures {st.get('failures')}, want {want_fail}")
    prog = st.get("progress", {})
    check(prog.get("rows") == n_rows and prog.get("ok") == n_ok and prog.get("in_flight") == 0
          and prog.get("fetch_queue") == 0 and prog.get("crop_queue") == 0, f"progress counters {prog}")
    with open(os.path.join(stats_dir, job + ".fetch.json")) as f:
        fj = json.load(f)
    for k in ("job", "stage", "manifest", "start", "end", "attempted", "succeeded", "skipped", "failed", "failures",
              "bytes", "seconds", "fetch_seconds", "rows_per_second", "stopped"):
        check(k in fj, f"stats file lacks {k}")
    check(fj.get("failures") == want_fail and fj.get("stopped") is False and fj.get("bytes", 0) > 0,
          f"stats file {fj}")
    check(0 < fj["fetch_seconds"]["p50"] <= fj["fetch_seconds"]["p99"], f"latencies {fj.get('fetch_seconds')}")
    fl = failures(stats_dir, job)
    by_line = {x["line"]: x for x in fl}
    check(len(fl) == len(by_line) == sum(want_fail.values()), f"{len(fl)} failure lines")
    for i, (u, cap, outcome, transient) in enumerate(rows):
        line = i + 2
        if outcome == "ok":
            check(line not in by_line, f"line {line} ({u}) failed: {by_line.get(line)}")
            continue
        x = by_line.get(line)
        if check(x is not None, f"line {line} ({u}): no failure line"):
            check(x["reason"] == outcome, f"line {line} ({u}): reason {x['reason']} ({x['why']}), want {outcome}")
            check(x["transient"] == transient, f"line {line}: transient {x['transient']}")
            check(x["url"] == u and len(x["key"]) == 24, f"line {line}: url/key {x}")
    check(by_line.get(bad_line, {}).get("reason") == "bad_row", f"bad row: {by_line.get(bad_line)}")

    # 2. the records: verify, crop, tokens, provenance, extra
    p = run(T, "shards", "verify", out)
    check(p.returncode == 0, "shards verify")
    recs = records(out)
    by_url = {r["provenance"]["source_url"]: r for r in recs}
    check(len(recs) == n_ok == len(by_url), f"{len(recs)} records for {n_ok} ok rows")
    check(all(r.get("latent_mean") is None for r in recs), "stage-1 records carry no latents")
    shards = sorted(n for n in os.listdir(out) if n.endswith(".tfrecord"))
    check(shards == [job + "-000000.tfrecord"], f"shard names {shards}")
    crop_dir = os.path.join(WORK, "crop")
    paths = [os.path.join(corpus, n) for n in files] + [os.path.join(fault_dir, "img.jpg")]
    run(T, "preprocess", "crop", "--out", crop_dir, *paths)
    caps = [r[1] for r in rows if r[2] == "ok"]
    tok_out = run(T, "tokenize", "--tokenizer", TOK, "--bos", input="".join(c + "\n" for c in caps).encode()).stdout
    tok_ids = dict(zip(caps, (json.loads(x) for x in tok_out.decode().splitlines())))
    for i, (u, cap, outcome, _) in enumerate(rows):
        if outcome != "ok":
            continue
        r = by_url.get(u)
        if not check(r is not None, f"no record for {u}"):
            continue
        src = os.path.join(corpus, files[i]) if i < len(files) else os.path.join(fault_dir, "img.jpg")
        im = r.get("image", {})
        check(im.get("format") == "rgb8" and im.get("width") == 256 and im.get("height") == 256, f"{u}: image {im.get('format')}")
        want = Image.open(os.path.join(crop_dir, os.path.basename(src) + ".png")).convert("RGB").tobytes()
        check(base64.b64decode(im.get("data", "")) == want, f"{u}: crop differs from preprocess crop")
        check(r["tokens"] == tok_ids.get(cap), f"{u}: tokens differ from tokenize")
        check(r["caption"] == cap and r["extra"] == {"id": f"row{i}"}, f"{u}: caption/extra {r['caption']} {r['extra']}")
        check(base64.b64decode(r["provenance"]["sha256"]) == hashlib.sha256(open(src, "rb").read()).digest(),
              f"{u}: sha256")
    first_shard = open(os.path.join(out, shards[0]), "rb").read()

    # 3. a rerun of the same job: every written row skipped, nothing twice
    p = run(*base)
    st2 = json.loads(p.stdout.decode().splitlines()[-1]) if p.returncode == 0 else {}
    check(st2.get("skipped") == n_ok and st2.get("succeeded") == 0, f"rerun: {st2}")
    check(len(records(out)) == n_ok, "rerun wrote records again")

    # 4. --retry-failed: only transient failures (flaky g1 now works: its 7th request)
    p = run(*base, "--retry-failed")
    st3 = json.loads(p.stdout.decode().splitlines()[-1]) if p.returncode == 0 else {}
    n_transient = sum(1 for r in rows if r[3])
    check(st3.get("attempted") == n_transient, f"retry attempted {st3.get('attempted')}, want {n_transient}")
    check(st3.get("succeeded") == 1, f"retry succeeded {st3.get('succeeded')}, want 1 (flaky g1)")
    recs = records(out)
    check(len(recs) == n_ok + 1 and len({r["key"] for r in recs}) == n_ok + 1, f"{len(recs)} records after retry")
    check(open(os.path.join(out, shards[0]), "rb").read() == first_shard, "the first shard was rewritten")
    check(os.path.exists(os.path.join(out, job + "-000001.tfrecord")), "the retry's shard")
    with open(os.path.join(stats_dir, job + ".fetch.json")) as f:
        fj = json.load(f)
    want_fail["http_500"] -= 1
    want_fail = {k: v for k, v in want_fail.items() if v}
    check(fj.get("failures") == want_fail and fj.get("succeeded", 0) + fj.get("skipped", 0) == n_ok + 1
          and fj.get("retries") == 1 and fj.get("attempted") == n_rows,
          f"merged stats {fj}")
    fl = failures(stats_dir, job)
    check(len(fl) == sum(want_fail.values()) and not [x for x in fl if "g1" in x["url"]],
          f"merged failure lines {len(fl)}")
    check(run(T, "shards", "verify", out).returncode == 0, "shards verify after retry")
    # --retry-all retries the permanent failures too
    lines_all = len(fl)
    p = run(*base, "--retry-failed", "--retry-all")
    st4 = json.loads(p.stdout.decode().splitlines()[-1]) if p.returncode == 0 else {}
    check(st4.get("attempted") == lines_all and st4.get("succeeded") == 0, f"retry-all {st4}")

    # 5. PNG crops: the same pixels; a slice of the manifest (rows 2..3)
    with open(manifest, "rb") as f:
        text = f.read()
    starts = [0]
    for k, b in enumerate(text):
        if b == 10:
            starts.append(k + 1)
    out_png = os.path.join(WORK, "crops_png")
    p = run(DRIVER, "--manifest", manifest, "--tokenizer", TOK, "--job", "web.tsv.000001", "--out", out_png,
            "--identity", "web.tsv", "--allow-address", "127.0.0.1/32", "--png", "--start", str(starts[2]),
            "--end", str(starts[4]), "--first-line", "3")
    st5 = json.loads(p.stdout.decode().splitlines()[-1]) if p.returncode == 0 else {}
    check(st5.get("attempted") == 2 and st5.get("succeeded") == 2, f"slice: {st5}")
    for r in records(out_png):
        raw = by_url[r["provenance"]["source_url"]]
        check(r["key"] == raw["key"], "same key for the same row in a slice")
        check(r["image"]["format"] == "png", "png crop")
        import io
        px = Image.open(io.BytesIO(base64.b64decode(r["image"]["data"]))).convert("RGB").tobytes()
        check(px == base64.b64decode(raw["image"]["data"]), "png crop decodes to the raw crop")

    # 6. a key column (a key repeated: duplicate_key) and a hash column (a wrong hash: hash_mismatch)
    img_sha = hashlib.sha256(open(os.path.join(fault_dir, "img.jpg"), "rb").read()).hexdigest()
    keyed = os.path.join(WORK, "keyed.tsv")
    with open(keyed, "w") as f:
        f.write("url\tcaption\tid\tsha\n")
        f.write(F("/image/img.jpg") + f"\tright hash\tk1\t{img_sha}\n")
        f.write(F("/image/img.jpg?x=2") + f"\twrong hash\tk2\t{'0' * 64}\n")
        f.write(F("/image/img.jpg?x=3") + "\tno hash\tk3\t\n")
        f.write(F("/image/img.jpg?x=4") + "\tk1 again\tk1\t\n")
    out_k = os.path.join(WORK, "keyed")
    p = run(DRIVER, "--manifest", keyed, "--tokenizer", TOK, "--job", "keyed.tsv.000000", "--out", out_k,
            "--allow-address", "127.0.0.1/32", "--key-col", "id", "--hash-col", "sha")
    st6 = json.loads(p.stdout.decode().splitlines()[-1]) if p.returncode == 0 else {}
    check(st6.get("succeeded") == 2 and st6.get("failures") == {"hash_mismatch": 1, "duplicate_key": 1}, f"keyed: {st6}")
    kr = {r["key"]: r for r in records(out_k)}
    check(set(kr) == {"k1", "k3"} and kr["k1"]["caption"] == "right hash", f"keyed records {sorted(kr)}")
    check("sha" not in kr.get("k1", {}).get("extra", {}) and "id" not in kr.get("k1", {}).get("extra", {}),
          f"key/hash columns in extra: {kr.get('k1', {}).get('extra')}")
    dl = {x["line"]: x for x in failures(os.path.join(out_k, "ingest-jobs"), "keyed.tsv.000000")}
    check(dl.get(3, {}).get("reason") == "hash_mismatch" and dl.get(5, {}).get("reason") == "duplicate_key"
          and "line 2" in dl.get(5, {}).get("why", ""), f"keyed failure lines {dl}")

checks.finish()
