"""test_ingest_plan: `transfuse ingest plan` on TSV, CSV with quoted newlines,
JSONL and gzip/zstd manifests: the jobs cover every row once, in order, each
starting at a row; planning twice gives the same jobs; the Kafka form (the
embedded broker) decodes with protoc as transfuse.v1.Job; bad flags exit 2,
a missing manifest 3.

    test_ingest_plan.py TRANSFUSE PROTO_DIR WORKDIR
"""
import gzip
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import Checks  # noqa: E402

T, PROTO, W = sys.argv[1], sys.argv[2], sys.argv[3]
c = Checks("test_ingest_plan")
shutil.rmtree(W, ignore_errors=True)
os.makedirs(W)


def plan(*args, code=0):
    p = subprocess.run([T, "ingest", "plan", *args], capture_output=True, text=True)
    c.check(p.returncode == code, f"plan {args}: exit {p.returncode}, wanted {code}: {p.stderr}")
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


def covers(jobs, text, rows, what):
    """The jobs tile the rows: contiguous ranges, each at a row start."""
    c.check(sum(j.get("rows", 0) for j in jobs) == rows, f"{what}: rows {sum(j.get('rows', 0) for j in jobs)} != {rows}")
    for j in jobs:
        j.setdefault("start", 0)  # proto JSON leaves out zero values
    for a, b in zip(jobs, jobs[1:]):
        c.check(a["end"] == b["start"], f"{what}: {a['id']} ends at {a['end']}, {b['id']} starts at {b['start']}")
    c.check("end" not in jobs[-1], f"{what}: the last job runs to the end")
    for j in jobs:
        c.check(j["start"] == 0 or text[j["start"] - 1:j["start"]] == b"\n", f"{what}: {j['id']} starts inside a row")
        c.check(text[:j["start"]].count(b"\n") + 1 == j["first_line"] or what == "csv",
                f"{what}: {j['id']} first_line {j['first_line']}")
    c.check([j.get("index", 0) for j in jobs] == list(range(len(jobs))), f"{what}: indices")


N = 23
tsv = b"url\tcaption\n" + b"".join(b"http://127.0.0.1/%d.jpg\tcaption %d\n" % (i, i) for i in range(N))
open(f"{W}/m.tsv", "wb").write(tsv)
jobs = plan("--manifest", f"{W}/m.tsv", "--job-size", "5")
c.check(len(jobs) == 5, f"23 rows in jobs of 5: {len(jobs)} jobs")
covers(jobs, tsv, N, "tsv")
c.check(jobs[0]["id"] == "m.tsv.000000" and jobs[4]["id"] == "m.tsv.000004", "job ids NAME.NNNNNN")
c.check(all(j["identity"] == "m.tsv" and j["manifest_size"] == len(tsv) for j in jobs), "identity and size")
c.check(plan("--manifest", f"{W}/m.tsv", "--job-size", "5") == jobs, "planning twice gives the same jobs")
other = plan("--manifest", f"{W}/m.tsv", "--job-size", "5", "--size", "128")
c.check(other[0]["options_digest"] != jobs[0]["options_digest"], "the options digest follows the stage options")

# --out FILE: the same jobs as JSON lines, written atomically
subprocess.run([T, "ingest", "plan", "--manifest", f"{W}/m.tsv", "--job-size", "5", "--out", f"{W}/jobs.jsonl"],
               check=True, capture_output=True)
c.check([json.loads(l) for l in open(f"{W}/jobs.jsonl")] == jobs, "--out writes the jobs")
c.check(not [f for f in os.listdir(W) if ".tmp" in f], "no temporary file left")

# CSV with a quoted newline: jobs cut at rows, never inside a field
csv = b'url,caption\n' + b"".join(b'http://h/%d.jpg,"two\nlines %d"\n' % (i, i) for i in range(7))
open(f"{W}/q.csv", "wb").write(csv)
jobs = plan("--manifest", f"{W}/q.csv", "--job-size", "2")
c.check(len(jobs) == 4, f"7 CSV rows in jobs of 2: {len(jobs)}")
covers(jobs, csv, 7, "csv")
for j in jobs:
    c.check(csv[j.get("start", 0):j.get("start", 0) + 9] == b"http://h/", f"csv: {j['id']} starts at a record")

# JSONL and compressed forms: offsets of the decompressed text
jl = b"".join(json.dumps({"url": f"http://h/{i}.jpg", "caption": f"c{i}"}).encode() + b"\n" for i in range(9))
open(f"{W}/j.jsonl", "wb").write(jl)
jobs = plan("--manifest", f"{W}/j.jsonl", "--job-size", "4")
covers(jobs, jl, 9, "jsonl")
open(f"{W}/m.tsv.gz", "wb").write(gzip.compress(tsv))
gz = plan("--manifest", f"{W}/m.tsv.gz", "--job-size", "5")
c.check([(j.get("start", 0), j.get("end")) for j in gz] == [(j.get("start", 0), j.get("end")) for j in
                                                       plan("--manifest", f"{W}/m.tsv", "--job-size", "5")],
        "gzip: the ranges of the decompressed text")
c.check(all(j.get("compressed") for j in gz), "gzip jobs say compressed")
if shutil.which("zstd"):
    subprocess.run(["zstd", "-q", "-f", f"{W}/m.tsv", "-o", f"{W}/m.tsv.zst"], check=True)
    zs = plan("--manifest", f"{W}/m.tsv.zst", "--job-size", "5")
    c.check(len(zs) == 5 and all(j.get("compressed") for j in zs), "zstd jobs")
# two manifests: each its own jobs
both = plan("--manifest", f"{W}/m.tsv", "--manifest", f"{W}/j.jsonl", "--job-size", "100")
c.check([j["id"] for j in both] == ["m.tsv.000000", "j.jsonl.000000"], f"two manifests: {[j['id'] for j in both]}")

# errors
plan("--job-size", "5", code=2)
plan("--manifest", f"{W}/m.tsv", code=2)
plan("--manifest", f"{W}/m.tsv", "--job-size", "0", code=2)
plan("--manifest", f"{W}/m.tsv", "--job-size", "5", "--bogus", code=2)
plan("--manifest", f"{W}/none.tsv", "--job-size", "5", code=3)

# Kafka: round-robin partitions, key = job id, value = transfuse.v1.Job
bs_file = f"{W}/bs"
broker = subprocess.Popen([T, "broker", "--topic", "jobs:2", "--bootstrap-file", bs_file],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(600):
        if os.path.exists(bs_file):
            break
        time.sleep(0.05)
    url = f"kafka://{open(bs_file).read().strip()}/jobs"
    p = subprocess.run([T, "ingest", "plan", "--manifest", f"{W}/m.tsv", "--job-size", "5", "--to", url],
                       capture_output=True, text=True)
    c.check(p.returncode == 0, f"plan --to: {p.stderr}")
    for part, want in ((0, ["m.tsv.000000", "m.tsv.000002", "m.tsv.000004"]), (1, ["m.tsv.000001", "m.tsv.000003"])):
        ids = []
        for off in range(len(want)):
            raw = subprocess.run([T, "shards", "cat", "--raw", "--partition", str(part), "--offset", str(off),
                                  "--limit", "1", url], capture_output=True).stdout
            d = subprocess.run(["protoc", f"--proto_path={PROTO}", "--decode=transfuse.v1.Job", "transfuse.proto"],
                               input=raw, capture_output=True)
            c.check(d.returncode == 0, f"partition {part} offset {off} decodes as a Job: {d.stderr!r}")
            ids += [l.split('"')[1] for l in d.stdout.decode().splitlines() if l.startswith("id:")]
        c.check(ids == want, f"partition {part}: {ids}, wanted {want}")
    p = subprocess.run([T, "ingest", "plan", "--manifest", f"{W}/m.tsv", "--job-size", "5",
                        "--to", url.replace("/jobs", "/nosuch")], capture_output=True, text=True)
    c.check(p.returncode == 3 and "does not exist" in p.stderr, f"missing topic: {p.returncode} {p.stderr}")
finally:
    broker.terminate()
    broker.wait()
c.finish()
