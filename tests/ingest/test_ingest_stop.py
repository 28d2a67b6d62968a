#!/usr/bin/env python3
"""Stopping `transfuse ingest` with an SD-sized VAE (random weights, the
real layer sizes), where one batch of crops takes many seconds to encode:

  - one SIGINT after the first shard is published: the process exits 130
    within a generous bound (a functional bound, not a speed claim: before
    the stop flag reached the VAE it finished the whole chunk in hand, 86 s
    after the signal when this test was written), the dataset verifies, and
    a rerun resumes so that every key is there exactly once;
  - two SIGINTs: the process ends at once (killed by the second signal),
    and nothing half-written is visible in the output folder.

usage: test_ingest_stop.py TRANSFUSE TOKENIZER_JSON SD_VAE_DIR WORKDIR"""
import json, os, shutil, signal, subprocess, sys, time

import numpy as np
from PIL import Image

T, TOK, VAE, WORK = sys.argv[1:5]
for need in (TOK, os.path.join(VAE, "config.json")):
    if not os.path.exists(need):
        print(f"skipped: {need} is missing (its fixture did not run)")
        sys.exit(77)
STOP_BOUND_S = 10.0   # generous: the stop is checked between VAE layers
KILL_BOUND_S = 5.0    # the second signal ends the process at once
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import Checks, wait_process

checks = Checks("test_ingest_stop")
check = checks.check


def run(*argv):
    return subprocess.run([T, *argv], capture_output=True)


def visible_files(d):
    return sorted(f for f in os.listdir(d) if not f.startswith(".")) if os.path.isdir(d) else []


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
manifest = os.path.join(WORK, "rows.tsv")
rows = 16
with open(manifest, "w") as f:
    f.write("url\tcaption\n")
    for i in range(rows):
        y, x = np.mgrid[0:300, 0:400]
        im = np.dstack([(x * (i + 1)) % 256, (y * 3) % 256, (x + y + 40 * i) % 256]).astype(np.uint8)
        p = os.path.join(WORK, f"img{i}.png")
        Image.fromarray(im).save(p)
        f.write(f"{p}\tpicture number {i}\n")


def ingest_args(out):
    # batch 4: a chunk is 16 rows, so the code before the stop flag reached
    # the VAE encoded 12 more crops after the first shard before it looked
    # at the stop request.
    return [T, "ingest", "--manifest", manifest, "--out", out, "--tokenizer", TOK, "--vae", VAE,
            "--batch", "4", "--threads", "2", "--shard-records", "1"]


def wait_for(path, proc, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


# 1. One SIGINT after the first shard is published.
out = os.path.join(WORK, "ds")
proc = subprocess.Popen(ingest_args(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
published = wait_for(os.path.join(out, "manifest.json"), proc, 600)
check(published, "a first shard was published")
proc.send_signal(signal.SIGINT)
waited, err = wait_process(proc, 300)
print(f"one SIGINT: exit {proc.returncode} {waited:.1f} s after the signal")
check(waited < STOP_BOUND_S, f"stopped {waited:.1f} s after SIGINT (bound {STOP_BOUND_S} s)")
check(proc.returncode == 130, f"exit status {proc.returncode}, want 130: {err.decode()[-2000:]}")
p = run("shards", "verify", out)
check(p.returncode == 0, "verify after the stop: " + p.stdout.decode() + p.stderr.decode())
done_first = [json.loads(l)["key"] for l in run("shards", "cat", out, "--fields", "key").stdout.decode().splitlines()]
check(0 < len(done_first) < rows, f"{len(done_first)} rows done before the stop")
stats = json.load(open(os.path.join(out, "ingest-stats.json")))
check(stats["written"] == len(done_first), f"stats of the stopped run {stats} vs {len(done_first)} records")

# The rerun resumes: every key exactly once.
p = subprocess.run(ingest_args(out), capture_output=True)
check(p.returncode == 0, f"rerun exit {p.returncode}: {p.stderr.decode()[-2000:]}")
keys = [json.loads(l)["key"] for l in run("shards", "cat", out, "--fields", "key").stdout.decode().splitlines()]
check(len(keys) == rows and len(set(keys)) == rows, f"after the rerun: {len(keys)} keys, {len(set(keys))} distinct")
check(set(done_first) <= set(keys), "the rows of the stopped run were kept")
s2 = json.load(open(os.path.join(out, "ingest-stats.json")))
check(s2["skipped_existing"] == len(done_first) and s2["written"] == rows - len(done_first), f"rerun stats {s2}")
check(run("shards", "verify", out).returncode == 0, "verify after the rerun")

# 2. Two SIGINTs: the second ends the process at once.
out2 = os.path.join(WORK, "ds2")
env = dict(os.environ, TRANSFUSE_LOG="debug")
proc = subprocess.Popen(ingest_args(out2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
time.sleep(3.0)  # loading the VAE and cropping take about a second; then it encodes
check(proc.poll() is None, "still running after 3 s")
proc.send_signal(signal.SIGINT)
time.sleep(0.01)  # the second while the first is being honoured (a VAE layer takes longer)
proc.send_signal(signal.SIGINT)
waited, err = wait_process(proc, 300)
print(f"two SIGINTs: exit {proc.returncode} ({'killed by the second' if proc.returncode == -signal.SIGINT else 'stopped'})"
      f" {waited:.2f} s after the second")
check(waited < KILL_BOUND_S, f"ended {waited:.1f} s after the second SIGINT (bound {KILL_BOUND_S} s)")
check(proc.returncode in (-signal.SIGINT, 130), f"exit status {proc.returncode}")
names = visible_files(out2)
check(set(names) <= {"manifest.json", "ingest-stats.json"} or
      all(n.endswith((".tfrecord", ".idx", ".json")) for n in names), f"visible files {names}")
if "manifest.json" in names:
    check(run("shards", "verify", out2).returncode == 0, "verify after two SIGINTs")

shutil.rmtree(WORK, ignore_errors=True)
checks.finish()
