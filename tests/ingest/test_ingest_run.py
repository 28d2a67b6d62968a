#!/usr/bin/env python3
"""End-to-end test of `transfuse ingest run` (both stages, the tiny VAE) on loopback: Debian's
nginx serving wallpaper photos re-encoded at web sizes (JPEG, WebP, PNG) and
fault_server.py for every fault a web crawl meets, in a manifest of several
jobs run by two workers:
  - every row ends as the outcome expected for it (final records with
    latents and crops by URL, failure lines by line), the summed stats and
    `shards stat`'s failure table are right, `shards verify` passes on the
    crops and the output;
  - a rerun finds every job done and writes nothing;
  - --retry-failed redoes only the transient failures (the flaky URL now
    works) and adds its record without rewriting any shard; --retry-all
    with --allow-private-networks recovers the private-address row;
  - SIGINT in the middle of a slow run exits 130, the rerun finishes, and
    every key is in the output exactly once; the progress line and
    /metrics show the run;
  - records also go to a topic of the embedded broker (--to), once each
    across a rerun;
  - bad flags exit 2 before any work.

usage: test_ingest_run.py TRANSFUSE TOKENIZER_JSON WORKDIR"""
import json, os, shutil, signal, subprocess, sys, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "fetch"))
from checks import Checks  # noqa: E402
from servers import FaultServer, Nginx, free_port, web_test_start  # noqa: E402

T, TOK, WORK = sys.argv[1:4]
checks = Checks("test_ingest_run")
check = checks.check
corpus, files = web_test_start(TOK, WORK, 16)
photos = [next(n for n in files if n.endswith(e)) for e in (".jpg", ".webp", ".png")]
photos += [n for n in files if n not in photos][:3]
fault_dir = os.path.join(WORK, "fault")
os.makedirs(fault_dir)
shutil.copy(os.path.join(corpus, photos[0]), os.path.join(fault_dir, "img.jpg"))
VAE = os.path.join(WORK, "vae")
assert subprocess.run([T, "vae", "init", "--layout", "tiny", "--seed", "3", "--out", VAE],
                      capture_output=True).returncode == 0, "vae init"


def run(*argv, ok=(0,), **kw):
    p = subprocess.run([T, *argv], capture_output=True, **kw)
    if p.returncode not in ok:
        print(f"exit {p.returncode} from {argv}:\n{p.stderr.decode()[-3000:]}", file=sys.stderr)
    return p


def records(path):
    if not path.startswith("kafka://") and not os.path.exists(os.path.join(path, "manifest.json")):
        return []  # nothing published there (yet)
    return [json.loads(line) for line in run("shards", "cat", path).stdout.decode().splitlines()]


def failure_lines(stats_dir):
    out = {}
    for n in sorted(os.listdir(stats_dir)):
        if n.endswith(".failures.jsonl"):
            with open(os.path.join(stats_dir, n)) as f:
                for line in f:
                    if line.strip():
                        x = json.loads(line)
                        check(x["line"] not in out, f"line {x['line']} failed in two jobs")
                        out[x["line"]] = x
    return out


def shard_bytes(d):
    return {n: open(os.path.join(d, n), "rb").read() for n in os.listdir(d) if n.endswith(".tfrecord")}


with Nginx(corpus, os.path.join(WORK, "nginx")) as ngx, FaultServer(fault_dir, also=["127.0.0.2"]) as fs:
    N = f"http://127.0.0.1:{ngx.port}"
    F = fs.url
    FAST = ["--timeout", "5", "--connect-timeout", "5", "--retry-base", "0.05", "--retry-max", "5",
            "--allow-address", "127.0.0.1/32"]
    rows = [(f"{N}/{n}", f"a photo: {n}", "ok") for n in photos]
    rows += [
        (f"{N}/no-such.jpg", "missing", "http_404"),
        (F("/retry-after/r1?n=1&v=1"), "429 with Retry-After, then the image", "ok"),
        (F("/flaky/f1?n=1"), "500 then 200", "ok"),
        (F("/flaky/g1?n=3"), "500 three times (the first run's attempts), then 200", "http_500"),
        (F("/truncated/img.jpg"), "a body cut short", "truncated"),
        (F("/html"), "an HTML page labelled image/jpeg", "not_image"),
        (F("/image/img.jpg?ct=text/html"), "an image labelled text/html", "ok"),
        (F("/image/img.jpg?ct=none"), "an image without a Content-Type", "ok"),
        (F("/loop/a"), "a redirect loop", "redirect_loop"),
        (F("/redirect/2"), "two redirects, then the image", "ok"),
        (F("/endless?cl=99999999999"), "a huge Content-Length", "too_large"),
        (F("/endless"), "an endless body", "too_large"),
        (F("/robots/img.jpg?h=noai"), "X-Robots-Tag: noai", "opted_out"),
        (F("/robots/img.jpg?h=transfuse:%20noimageai"), "noimageai scoped to us", "opted_out"),
        (F("/robots/img.jpg?h=otherbot:%20noai"), "noai scoped to another bot", "ok"),
        (F("/image/img.jpg", host="127.0.0.2"), "a private address", "private_address"),
        (F("/status/403"), "forbidden", "http_403"),
        ("ftp://example.com/a.jpg", "another scheme", "forbidden_scheme"),
    ]
    manifest = os.path.join(WORK, "web.tsv")
    with open(manifest, "w") as f:
        f.write("url\tcaption\tlicense\n")
        for i, (u, cap, _) in enumerate(rows):
            f.write(f"{u}\t{cap}\tcc-{i}\n")
    out = os.path.join(WORK, "out")
    stats_dir = os.path.join(out, "ingest-jobs")
    crops = os.path.join(out, "crops")
    base = ["ingest", "run", "--manifest", manifest, "--out", out, "--tokenizer", TOK, "--vae", VAE, "--workers", "2",
            "--job-size", "7", "--threads", "1", "--max-size", "8Mi", *FAST]
    n_jobs = (len(rows) + 6) // 7

    # 1. the run: every row's outcome
    p = run(*base)
    check(p.returncode == 0, f"ingest run exit {p.returncode}")
    err = p.stderr.decode()
    n_ok = sum(1 for r in rows if r[2] == "ok")
    check(f"{n_jobs} job(s): {n_jobs} run" in err, f"summary: {err[-600:]}")
    check(f"{len(rows)} rows: {n_ok} written" in err, f"summary counts: {err[-600:]}")
    recs = records(out)
    by_url = {r["provenance"]["source_url"]: r for r in recs}
    check(len(recs) == len(by_url) == n_ok, f"{len(recs)} records, {len(by_url)} URLs, want {n_ok}")
    crop_by_url = {r["provenance"]["source_url"]: r for r in records(crops)}
    check(len(crop_by_url) == n_ok, f"{len(crop_by_url)} crops, want {n_ok}")
    fl = failure_lines(stats_dir)
    for i, (u, cap, want) in enumerate(rows):
        line = i + 2
        if want == "ok":
            r, c = by_url.get(u), crop_by_url.get(u)
            if check(r is not None and c is not None, f"line {line} ({u}): no record; failure {fl.get(line)}"):
                check(r["caption"] == cap and r["extra"] == {"license": f"cc-{i}"}, f"line {line}: caption/extra")
                check(r["key"] == c["key"] and r["tokens"] == c["tokens"], f"line {line}: key/tokens of the crop")
                check(r.get("latent_mean", {}).get("shape") == [4, 32, 32] and "image" not in r,
                      f"line {line}: latents, no crop")
                check(c["image"]["format"] == "rgb8" and c["image"]["width"] == 256, f"line {line}: crop")
        else:
            x = fl.get(line)
            check(x is not None and x["reason"] == want and x["url"] == u,
                  f"line {line} ({u}): {x and (x['reason'], x['why'])}, want {want}")
    check(len(fl) == len(rows) - n_ok, f"{len(fl)} failure lines")
    check(run("shards", "verify", out).returncode == 0, "shards verify")
    check(run("shards", "verify", crops).returncode == 0, "shards verify of the crops")
    want_fail = {}
    for r in rows:
        if r[2] != "ok":
            want_fail[r[2]] = want_fail.get(r[2], 0) + 1
    st = json.loads(run("shards", "stat", "--json", out).stdout)
    ing = st.get("ingest", {}).get("fetch", {})
    check(ing.get("jobs") == n_jobs and ing.get("attempted") == len(rows) and ing.get("succeeded") == n_ok
          and ing.get("failures") == want_fail, f"shards stat ingest summary {ing}, want failures {want_fail}")
    enc = st.get("ingest", {}).get("encode", {})
    check(enc.get("jobs") == n_jobs and enc.get("succeeded") == n_ok and enc.get("failed") == 0, f"encode summary {enc}")
    text = run("shards", "stat", out).stdout.decode()
    check("failures" in text and all(k in text for k in want_fail), f"shards stat table:\n{text}")
    check(f"ingest fetch     {n_jobs} jobs: {len(rows)} rows: {n_ok} records" in text, f"stat line:\n{text}")
    check(f"ingest encode    {n_jobs} jobs: {n_ok} rows: {n_ok} records" in text, f"stat encode line:\n{text}")
    jobs = sorted(n[:-len(".fetch.json")] for n in os.listdir(stats_dir) if n.endswith(".fetch.json"))
    check(jobs == [f"web.tsv.{k:06d}" for k in range(n_jobs)], f"jobs {jobs}")
    for j in jobs:
        check(os.path.exists(os.path.join(out, j + "-000000.tfrecord")) or
              json.load(open(os.path.join(stats_dir, j + ".fetch.json")))["succeeded"] == 0, f"{j}'s shard")

    # 2. a rerun: every job done, nothing written
    before, crops_before = shard_bytes(out), shard_bytes(crops)
    p = run(*base)
    check(p.returncode == 0 and f"{n_jobs} done before" in p.stderr.decode(), f"rerun: {p.stderr.decode()[-400:]}")
    check(shard_bytes(out) == before and shard_bytes(crops) == crops_before, "a rerun changed the shards")
    # a job with stage 1 done and stage 2 not (as after a stop during the VAE): stage 2 only, nothing twice
    j1 = json.load(open(os.path.join(stats_dir, "web.tsv.000001.encode.json")))
    os.unlink(os.path.join(stats_dir, "web.tsv.000001.encode.json"))
    p = run(*base)
    err = p.stderr.decode()
    check(p.returncode == 0 and f"{n_jobs - 1} done before" in err and " 0 rows: " in err
          and f"encode: 0 encoded, {j1['succeeded']} already there" in err, f"stage 2 only: {err[-500:]}")
    check(shard_bytes(out) == before and shard_bytes(crops) == crops_before, "stage 2 alone changed the shards")
    check(os.path.exists(os.path.join(stats_dir, "web.tsv.000001.encode.json")), "stage 2 alone: stats written")

    # 3. --retry-failed: the transient failures only (g1 recovers, truncated fails again)
    p = run(*base, "--retry-failed")
    err = p.stderr.decode()
    n_transient = sum(1 for r in rows if r[2] in ("http_500", "truncated"))
    check(p.returncode == 0 and f"{n_transient} rows: 1 written" in err, f"retry: {err[-600:]}")
    after, crops_after = shard_bytes(out), shard_bytes(crops)
    check(all(after.get(k) == v for k, v in before.items()), "--retry-failed rewrote a shard")
    check(all(crops_after.get(k) == v for k, v in crops_before.items()), "--retry-failed rewrote a crops shard")
    check(len(after) == len(before) + 1 and len(crops_after) == len(crops_before) + 1,
          f"{len(after) - len(before)}, {len(crops_after) - len(crops_before)} new shards after the retry")
    recs = records(out)
    g1 = F("/flaky/g1?n=3")
    check(len(recs) == n_ok + 1 and g1 in {r["provenance"]["source_url"] for r in recs}, "g1 recovered")
    fl = failure_lines(stats_dir)
    check(len(fl) == len(rows) - n_ok - 1 and all(x["url"] != g1 for x in fl.values()), "merged failure lines")
    st = json.loads(run("shards", "stat", "--json", out).stdout)
    want_fail.pop("http_500")
    check(st["ingest"]["fetch"]["failures"] == want_fail, f"after retry: {st['ingest']['fetch']['failures']}")
    # --retry-all with --allow-private-networks: the private row works now; nothing else does
    p = run(*base, "--retry-failed", "--retry-all", "--allow-private-networks")
    check(p.returncode == 0 and f"{len(fl)} rows: 1 written" in p.stderr.decode(),
          f"retry-all: {p.stderr.decode()[-600:]}")
    recs = records(out)
    check(len(recs) == len({r["key"] for r in recs}) == n_ok + 2, f"{len(recs)} records after retry-all")
    check(run("shards", "verify", out).returncode == 0, "shards verify after the retries")
    check(len(records(crops)) == n_ok + 2, "crops after the retries")

    # 4. SIGINT in the middle of a slow run, then a rerun: every key exactly once
    slow = os.path.join(WORK, "slow.tsv")
    n_slow = 80
    with open(slow, "w") as f:
        f.write("url\tcaption\n")
        for i in range(n_slow):
            f.write(F(f"/hold/img.jpg?s=0.25&i={i}") + f"\tslow row {i}\n")
    out2 = os.path.join(WORK, "out_slow")
    port = free_port()
    slow_args = ["ingest", "run", "--manifest", slow, "--out", out2, "--tokenizer", TOK, "--vae", VAE, "--workers", "2",
                 "--job-size", "10", "--concurrency", "2", "--threads", "1", *FAST]
    env = dict(os.environ, TRANSFUSE_PROGRESS="1")
    proc = subprocess.Popen([T, *slow_args, "--metrics-port", str(port)], stderr=subprocess.PIPE, env=env)
    metrics = ""
    for _ in range(600):  # until the first job is done (its stats file), scraping /metrics meanwhile
        if proc.poll() is not None:
            break
        try:
            metrics = urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            pass
        d = os.path.join(out2, "ingest-jobs")
        if os.path.isdir(d) and any(n.endswith(".fetch.json") for n in os.listdir(d)):
            time.sleep(0.5)  # into the next jobs, so the stop finds rows in hand (not a timed assertion)
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    check(proc.returncode == 130, f"SIGINT: exit {proc.returncode}: {err[-500:]}")
    check("rows/s" in err and "in flight" in err and "ETA" in err, f"progress line: {err[-500:]}")
    for series in ("transfuse_ingest_rows_total", "transfuse_ingest_in_flight", "transfuse_ingest_queue_depth",
                   "transfuse_ingest_rows_planned", "transfuse_ingest_bytes_total"):
        check(series in metrics, f"/metrics lacks {series}")
    done_jobs = [n for n in os.listdir(os.path.join(out2, "ingest-jobs")) if n.endswith(".fetch.json")]
    check(0 < len(done_jobs) < n_slow // 10, f"{len(done_jobs)} jobs done at the stop")
    partial, partial_crops = records(out2), records(os.path.join(out2, "crops"))
    check(len(partial) == len({r["key"] for r in partial}) < n_slow, f"{len(partial)} records at the stop")
    check(len(partial_crops) == len({r["key"] for r in partial_crops}) < n_slow, f"{len(partial_crops)} crops")
    print(f"SIGINT: stage 1 of {len(done_jobs)} job(s) done, {len(partial_crops)} crops published "
          f"({len(partial_crops) - 10 * len(done_jobs)} of them by stopped jobs), {len(partial)} final records")
    p = run(*slow_args)
    check(p.returncode == 0, "rerun after SIGINT")
    recs = records(out2)
    keys = [r["key"] for r in recs]
    check(len(keys) == n_slow and len(set(keys)) == n_slow, f"{len(keys)} records, {len(set(keys))} keys, want {n_slow}")
    check(sorted(r["caption"] for r in recs) == sorted(f"slow row {i}" for i in range(n_slow)), "every slow row once")
    check(run("shards", "verify", out2).returncode == 0, "shards verify after the resume")
    ckeys = [r["key"] for r in records(os.path.join(out2, "crops"))]
    check(sorted(ckeys) == sorted(keys), "the crops: every key once")
    sj = json.loads(run("shards", "stat", "--json", out2).stdout)["ingest"]
    st = sj["fetch"]
    check(st["jobs"] == n_slow // 10 and st["succeeded"] + st["skipped"] == n_slow and st["failed"] == 0,
          f"slow stats {st}")
    check(sj["encode"]["jobs"] == n_slow // 10 and sj["encode"]["succeeded"] + sj["encode"]["skipped"] == n_slow,
          f"slow encode stats {sj['encode']}")

    # 5. a topic as well (the embedded broker): once each, across a rerun
    bs_file = os.path.join(WORK, "bs")
    broker = subprocess.Popen([T, "broker", "--topic", "crops:2", "--bootstrap-file", bs_file],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if os.path.exists(bs_file) and open(bs_file).read().strip():
                break
            time.sleep(0.05)
        topic = f"kafka://{open(bs_file).read().strip()}/crops"
        small = os.path.join(WORK, "small.tsv")
        with open(small, "w") as f:
            f.write("url\tcaption\n")
            for n in photos[:4]:
                f.write(f"{N}/{n}\tphoto {n}\n")
            f.write(f"{N}/no-such.jpg\tmissing\n")
        out3 = os.path.join(WORK, "out_topic")
        args = ["ingest", "run", "--manifest", small, "--out", out3, "--to", topic, "--tokenizer", TOK, "--vae", VAE,
                "--job-size", "2", *FAST]
        check(run(*args).returncode == 0, "run --out --to")
        trecs = records(topic)
        check(len(trecs) == 4 and {r["key"] for r in trecs} == {r["key"] for r in records(out3)},
              f"{len(trecs)} records in the topic")
        shutil.rmtree(os.path.join(out3, "ingest-jobs"))  # the jobs are redone: keys found in both sinks
        p = run(*args)
        check(p.returncode == 0 and "4 already there" in p.stderr.decode(), f"rerun --to: {p.stderr.decode()[-300:]}")
        check(len(records(topic)) == 4, "a rerun duplicated records in the topic")
        check(run("shards", "verify", topic).returncode == 0, "shards verify of the topic")
        sd = os.path.join(WORK, "topic_stats")
        check(run("ingest", "run", "--manifest", small, "--to", topic, "--stats-dir", sd, "--crops",
                  os.path.join(WORK, "topic_crops"), "--tokenizer", TOK, "--vae", VAE, *FAST).returncode == 0,
              "--to alone with --stats-dir and --crops")
        check(len(records(topic)) == 4 and os.listdir(sd), "--to alone: nothing twice, stats written")
    finally:
        broker.terminate()
        broker.wait()

# 6. local files (the embedded default): only with --allow-local-files; relative paths from the manifest's folder
local_dir = os.path.join(WORK, "local")
os.makedirs(local_dir)
local = os.path.join(local_dir, "local.tsv")
with open(local, "w") as f:
    f.write("url\tcaption\n")
    f.write(f"../corpus/{photos[1]}\ta relative path\n")
    f.write(f"file://{os.path.join(corpus, photos[2])}\ta file URL\n")
out4 = os.path.join(WORK, "out_local")
p = run("ingest", "run", "--manifest", local, "--out", out4, "--tokenizer", TOK, "--vae", VAE, "--allow-local-files")
check(p.returncode == 0 and len(records(out4)) == 2, f"local files: {p.stderr.decode()[-400:]}")
# a long manifest name (LAION's parquet names are ~90 bytes): job ids stay short enough to prefix shard names
long_name = os.path.join(local_dir, "laion2B-en-part-00000-5114fd87-297e-42b0-9d11-50f1df323dfa-c000.snappy.tsv")
shutil.copy(local, long_name)
out6 = os.path.join(WORK, "out_long")
p = run("ingest", "run", "--manifest", long_name, "--out", out6, "--tokenizer", TOK, "--vae", VAE, "--allow-local-files")
jobs6 = [n for n in os.listdir(os.path.join(out6, "ingest-jobs")) if n.endswith(".encode.json")] if p.returncode == 0 else []
check(p.returncode == 0 and len(records(out6)) == 2 and len(jobs6) == 1 and len(jobs6[0]) <= 55 + 12,
      f"long manifest name: {jobs6} {p.stderr.decode()[-300:]}")
out5 = os.path.join(WORK, "out_nolocal")
p = run("ingest", "run", "--manifest", local, "--out", out5, "--tokenizer", TOK, "--vae", VAE)
fl = failure_lines(os.path.join(out5, "ingest-jobs"))
check(p.returncode == 0 and fl.get(3, {}).get("reason") == "forbidden_scheme" and fl.get(2, {}).get("reason") == "bad_url",
      f"local files without the flag: {fl}")
check(os.path.exists(os.path.join(out5, "ingest-jobs", "local.tsv.000000.encode.json")), "a job of failures only is done")

# 7. bad command lines: exit 2, nothing done
fresh = os.path.join(WORK, "fresh")
good = ["--manifest", manifest, "--out", fresh, "--tokenizer", TOK, "--vae", VAE]
for argv in (["--manifest", manifest, "--out", fresh, "--vae", VAE],
             ["--manifest", manifest, "--out", fresh, "--tokenizer", TOK],
             ["--manifest", manifest, "--tokenizer", TOK, "--vae", VAE],
             [*good, "--retry-all"],
             [*good, "--to", "http://x/y"],
             ["--manifest", manifest, "--to", "kafka://127.0.0.1:1/t", "--tokenizer", TOK, "--vae", VAE],
             [*good, "--job-size", "0"],
             [*good, "--concurrency", "0"],
             [*good, "--latent-dtype", "f8"],
             [*good, "--batch", "0"],
             [*good, "--bogus"],
             [*good, "operand"]):
    p = run("ingest", "run", *argv, ok=(2,))
    check(p.returncode == 2, f"{argv}: exit {p.returncode}")
check(not os.path.exists(fresh), "a bad command line wrote output")
p = run("ingest", "run", "--manifest", os.path.join(WORK, "none.tsv"), "--out", fresh, "--tokenizer", TOK,
        "--vae", VAE, ok=(3,))
check(p.returncode == 3, f"missing manifest: exit {p.returncode}")
p = run("ingest", "run", *good, "--size", "100", ok=(3,))
check(p.returncode == 3 and "multiple" in p.stderr.decode(), f"--size 100 with the VAE: exit {p.returncode}")
check(run("ingest", "run", "--help").returncode == 0, "--help")
checks.finish()
