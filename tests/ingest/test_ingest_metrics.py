#!/usr/bin/env python3
"""`transfuse ingest --metrics-port` scraped by Debian's Prometheus server.

The test starts `prometheus` on loopback with a scrape interval of 1 s and
one target, a running ingest of 400 rows (3 bad ones first, then images
through a tiny VAE). Once three scrapes have shown rows done growing, the
test stops the ingest with SIGINT (so the run lasts as long as
this machine needs, fast or slow, or under ThreadSanitizer), then asks
Prometheus' HTTP API (/api/v1/query) what it scraped:
  - the target was scraped at least twice and was up;
  - rows done (transfuse_ingest_rows_total over its outcomes) grew, stayed
    within the manifest, and rows planned says 400;
  - failures by reason equal the run's ingest-stats.json (the bad rows come
    first, so their counts are final long before the process ends);
  - bytes read, images encoded, the VAE batch latency histogram, the
    in-flight and queue gauges and the build info are there with plausible
    values.
The names are the ones docs/OPERATIONS.md lists for `transfuse top` and the
alert rules. `--register DIR` leaves a registration file while the run lasts
and removes it at the end.

usage: test_ingest_metrics.py TRANSFUSE TOKENIZER_JSON WORKDIR"""
import json, os, shutil, signal, socket, subprocess, sys, time, urllib.parse, urllib.request

import numpy as np
from PIL import Image

T, TOK, WORK = sys.argv[1:4]
PROM = shutil.which("prometheus")
if not PROM:
    print("skipped: no prometheus (scripts/install-deps.sh --test installs Debian's)")
    sys.exit(77)
if not os.path.exists(TOK):
    print(f"skipped: {TOK} is missing (the tokenizer_fetch_reference fixture did not run)")
    sys.exit(77)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import Checks

checks = Checks("test_ingest_metrics")
check = checks.check


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
imgs = []
for i in range(7):
    y, x = np.mgrid[0:360, 0:480]
    p = os.path.join(WORK, f"img{i}.jpg")
    Image.fromarray(np.dstack([(x * (i + 1)) % 256, (y * 3) % 256, (x + y) % 256]).astype(np.uint8)).save(p)
    imgs.append(p)
with open(os.path.join(WORK, "page.jpg"), "w") as f:
    f.write("<html>not an image</html>")
data = open(imgs[0], "rb").read()
with open(os.path.join(WORK, "cut.jpg"), "wb") as f:
    f.write(data[:300])
manifest = os.path.join(WORK, "rows.tsv")
rows = 400
with open(manifest, "w") as f:
    f.write("url\tcaption\n")
    f.write(f"{WORK}/missing.jpg\tgone\n{WORK}/page.jpg\thtml\n{WORK}/cut.jpg\tcut short\n")
    for i in range(rows - 3):
        f.write(f"{imgs[i % len(imgs)]}\tpicture {i}\n")
vae = os.path.join(WORK, "vae")
subprocess.run([T, "vae", "init", "--layout", "tiny", "--seed", "2", "--out", vae], check=True, capture_output=True)

ingest_port, prom_port = free_port(), free_port()
with open(os.path.join(WORK, "prometheus.yml"), "w") as f:
    f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
            "scrape_configs:\n  - job_name: ingest\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{ingest_port}']\n")
prom = subprocess.Popen([PROM, f"--config.file={WORK}/prometheus.yml", f"--storage.tsdb.path={WORK}/tsdb",
                         f"--web.listen-address=127.0.0.1:{prom_port}"],
                        stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, "prometheus.log"), "w"))
api = f"http://127.0.0.1:{prom_port}"


def query(q):
    url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{q}: {body}")
    return {json.dumps(s["metric"], sort_keys=True): float(s["value"][1]) for s in body["data"]["result"]}


def one(q):
    v = query(q)
    return next(iter(v.values())) if len(v) == 1 else None


try:
    deadline = time.time() + 60
    ready = False
    while time.time() < deadline and not ready:
        try:
            ready = urllib.request.urlopen(f"{api}/-/ready", timeout=2).status == 200
        except OSError:
            time.sleep(0.2)
    check(ready, "prometheus ready")

    out = os.path.join(WORK, "ds")
    reg = os.path.join(WORK, "registry")
    ingest = subprocess.Popen([T, "ingest", "--manifest", manifest, "--out", out, "--tokenizer", TOK, "--vae", vae,
                               "--threads", "2", "--batch", "2", "--metrics-port", str(ingest_port),
                               "--register", reg], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = []  # rows done as Prometheus saw them while the ingest ran
    registered = []
    stopping = False
    while ingest.poll() is None:
        v = one("sum(transfuse_ingest_rows_total)")
        if v is not None and (not seen or seen[-1] != v):
            seen.append(v)
        if os.path.isdir(reg):
            for name in os.listdir(reg):
                if name.endswith(".json") and name not in [r["name"] for r in registered]:
                    try:
                        registered.append(dict(json.load(open(os.path.join(reg, name))), name=name))
                    except (OSError, ValueError):
                        pass
        if not stopping and len([v for v in seen if v > 0]) >= 3:  # three scrapes showed progress
            ingest.send_signal(signal.SIGINT)
            stopping = True
        time.sleep(0.5)
    _, err = ingest.communicate()
    check(stopping and ingest.returncode == 130, f"ingest exit {ingest.returncode}: {err.decode()[-2000:]}")
    stats = json.load(open(os.path.join(out, "ingest-stats.json")))
    print("rows done as scraped while running:", seen)
    print("stats:", {k: stats[k] for k in ("rows", "written", "failed", "failures")})

    check(len(registered) == 1 and registered[0].get("port") == ingest_port and
          registered[0].get("command") == "ingest", f"registration while running: {registered}")
    check(not [n for n in os.listdir(reg) if n.endswith(".json")], "registration removed at the end")

    # Range queries read the samples scraped before the target went away.
    W = "[10m]"
    scrapes = one(f"count_over_time(transfuse_ingest_rows_total{{outcome='ok'}}{W})")
    print(f"scrapes of the ingest: {scrapes}")
    check(scrapes is not None and scrapes >= 3, f"scraped at least three times: {scrapes}")
    check(one(f"max_over_time(up{{job='ingest'}}{W})") == 1, "target was up")
    done = one(f"sum(max_over_time(transfuse_ingest_rows_total{W}))")
    check(done is not None and 0 < done <= rows, f"rows done {done} in (0, {rows}]")
    check(seen == sorted(seen) and len(seen) >= 1, f"rows done only grew: {seen}")
    check(one(f"last_over_time(transfuse_ingest_rows_planned{W})") == rows, "rows planned gauge")
    written = one(f"max_over_time(transfuse_ingest_rows_total{{outcome='ok'}}{W})")
    check(written is not None and 0 < written <= stats["written"], f"written {written} vs {stats['written']}")
    check(one(f"last_over_time(transfuse_ingest_rows_total{{outcome='failed'}}{W})") == stats["failed"],
          "failed rows")
    check(one(f"last_over_time(transfuse_ingest_rows_total{{outcome='skipped'}}{W})") == 0, "skipped rows")
    failed = query(f"last_over_time(transfuse_ingest_failures_total{W})")
    by_reason = {json.loads(k)["reason"]: v for k, v in failed.items()}
    check(len(by_reason) >= 10, f"a series per failure reason: {sorted(by_reason)}")
    for reason, v in by_reason.items():
        check(v == stats["failures"].get(reason, 0), f"reason {reason}: scraped {v}, stats {stats['failures']}")
    check(sum(by_reason.values()) == stats["failed"] == 3, f"failed total {by_reason}")
    rb = one(f"max_over_time(transfuse_ingest_bytes_total{W})")
    check(rb is not None and rb > 0, f"bytes read {rb}")
    enc = one(f"max_over_time(transfuse_encode_images_total{W})")
    check(enc is not None and 0 < enc <= stats["written"], f"images encoded {enc}")
    bc = one(f"max_over_time(transfuse_encode_batch_seconds_count{W})")
    bs = one(f"max_over_time(transfuse_encode_batch_seconds_sum{W})")
    check(bc is not None and bc > 0 and bs is not None and bs > 0, f"VAE batch histogram count {bc} sum {bs}")
    buckets = query(f"max_over_time(transfuse_encode_batch_seconds_bucket{W})")
    check(any('"+Inf"' in k for k in buckets), f"histogram buckets {list(buckets)[:3]}")
    for g in ("transfuse_ingest_in_flight", "transfuse_ingest_queue_depth{queue='encode'}"):
        v = one(f"max_over_time({g}{W})")
        check(v is not None and 0 <= v <= rows, f"gauge {g}: {v}")
    check(one(f"max_over_time(transfuse_build_info{{command='ingest'}}{W})") == 1, "build info")
finally:
    prom.terminate()
    try:
        prom.wait(timeout=20)
    except subprocess.TimeoutExpired:
        prom.kill()

if checks.failures:
    print(open(os.path.join(WORK, "prometheus.log")).read()[-3000:], file=sys.stderr)
shutil.rmtree(WORK, ignore_errors=True)
checks.finish()
