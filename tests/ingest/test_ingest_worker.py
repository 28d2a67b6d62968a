#!/usr/bin/env python3
"""test_ingest_worker: `transfuse ingest worker --encode` on the embedded
broker (loopback), crops of Debian's wallpaper photos as stage-1 records on
a two-partition crops topic.
  1. share: worker A drains a first wave alone; worker B joins (both log
     their assignments); a second wave goes to both partitions; both do
     jobs, and every key is in the output folder and topic exactly once.
  2. SIGKILL: worker A (the SD-sized VAE, so a job takes seconds) is killed
     while a job is half written (some of its shards published, no commit);
     worker B takes the partitions after the session timeout and redoes the
     job: every key exactly once in folder and topic, none lost.
  3. SIGTERM ends a worker with 130; bad flags exit 2; stage 1 without
     stage_fetch built says so.
Waits are bounded; nothing is timed.

    test_ingest_worker.py TRANSFUSE SD_VAE_DIR WORKDIR
"""
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import Checks  # noqa: E402
from stage1_records import (Broker, crop_records, keys_of, photo_crops, records_in, shards_import,  # noqa: E402
                            stop_process, wait_for, exactly_once)

T, SD_VAE, W = sys.argv[1], sys.argv[2], sys.argv[3]
c = Checks("test_ingest_worker")
shutil.rmtree(W, ignore_errors=True)
os.makedirs(W)
S = 64
crops = photo_crops(S, 10)
if len(crops) < 4:
    print("skipped: no wallpaper photos installed (mate-backgrounds, gnome-backgrounds)")
    sys.exit(77)


def run(*argv, code=0, **kw):
    p = subprocess.run([T, *argv], capture_output=True, **kw)
    c.check(p.returncode == code, f"{argv[:3]}: exit {p.returncode}, wanted {code}: {p.stderr.decode()[-2000:]}")
    return p


def publish(broker, topic, name, records):
    folder = f"{W}/{name}"
    p = shards_import(T, W, folder, name, records)
    c.check(p.returncode == 0, f"import {name}: {p.stderr.decode()}")
    run("shards", "publish", folder, "--to", broker.url(topic))


def worker(name, *args):
    log = open(f"{W}/{name}.log", "w")
    return subprocess.Popen([T, "ingest", "worker", "--encode", "--threads", "1", *args], stdout=log, stderr=log)


def log(name):
    return open(f"{W}/{name}.log").read()












tiny = f"{W}/vae"
run("vae", "init", "--layout", "tiny", "--seed", "3", "--out", tiny)

with Broker(T, W, "crops:2", "latents:2", "crops2:2", "latents2:2") as broker:
    c.check(broker.bootstrap != "", "the broker started")

    # -- 1. two workers share the partitions --
    recs, _ = crop_records(crops, 40, "s{:03d}")
    publish(broker, "crops", "wave1", recs[:20])
    out = f"{W}/share"
    common = ["--from", broker.url("crops"), "--group", "share", "--out", out, "--to", broker.url("latents"),
              "--vae", tiny, "--chunk", "3", "--shard-records", "2"]
    a = worker("a", *common)
    wait_for(c, lambda: records_in(out) >= 20, "worker A to drain the first wave", procs=(a,))
    b = worker("b", *common)
    wait_for(c, lambda: "assigned partition" in log("b") and log("a").count("assigned partition") >= 2,
         "the rebalance that gives B partitions", procs=(a, b))
    publish(broker, "crops", "wave2", recs[20:])
    wait_for(c, lambda: records_in(out) >= 40, "both waves in the output", procs=(a, b))
    time.sleep(0.5)  # not a timing check: lets a duplicate, if any, land before the count below
    stop_process(c, a, "a", lambda: log("a"))
    stop_process(c, b, "b", lambda: log("b"))
    keys = [r["key"] for r in recs]
    exactly_once(c, keys_of(T, out), keys, "share: folder")
    run("shards", "verify", out)
    topic = keys_of(T, broker.url("latents"))
    exactly_once(c, topic, keys, "share: topic")
    for name in ("a", "b"):
        done = [l for l in log(name).splitlines() if l.startswith("encode crops.p")]
        c.check(len(done) > 0, f"worker {name} did jobs: {log(name)[-1500:]}")
    b_parts = {l.split("encode crops.p")[1].split(".")[0] for l in log("b").splitlines() if l.startswith("encode crops.p")}
    print(f"share: worker a {log('a').count('encode crops.p')} jobs, b {log('b').count('encode crops.p')} jobs "
          f"(partitions {sorted(b_parts)})")

    # -- 2. SIGKILL mid-job --
    recs2, _ = crop_records(crops, 16, "x{:03d}")
    publish(broker, "crops2", "kill", recs2)
    out2 = f"{W}/kill_out"
    common = ["--from", broker.url("crops2"), "--group", "kill", "--out", out2, "--to", broker.url("latents2"),
              "--vae", SD_VAE, "--chunk", "8", "--batch", "1", "--shard-records", "1"]
    a = worker("ka", *common)
    wait_for(c, lambda: records_in(out2) >= 1, "worker A's first shard", procs=(a,))
    a.send_signal(signal.SIGKILL)
    a.wait()
    at_kill = keys_of(T, out2)
    started = [l.split("job ")[1].split(":")[0] for l in log("ka").splitlines() if " job crops2.p" in l and "offsets" in l]
    finished = [l.split("encode ")[1].split(":")[0] for l in log("ka").splitlines() if l.startswith("encode crops2.p")]
    c.check(started and started[-1] not in finished, f"the kill came in the middle of a job: {started} {finished}")
    c.check(0 < len(at_kill) < 16, f"part of the output was durable at the kill: {len(at_kill)} records")
    b = worker("kb", *common)
    wait_for(c, lambda: records_in(out2) >= 16, "worker B to redo the killed job and finish", procs=(b,))
    time.sleep(0.5)
    stop_process(c, b, "kb", lambda: log("kb"))
    keys2 = [r["key"] for r in recs2]
    exactly_once(c, keys_of(T, out2), keys2, "kill: folder")
    run("shards", "verify", out2)
    topic = keys_of(T, broker.url("latents2"))
    exactly_once(c, topic, keys2, "kill: topic")
    redone = [l for l in log("kb").splitlines() if started and l.startswith(f"encode {started[-1]}:")]
    c.check(redone and "already there" in redone[0] and " 0 already there" not in redone[0],
            f"B redid the killed job, skipping what was durable: {redone}")
    print(f"kill: {len(at_kill)} records durable at the kill; B: {redone}")

    # -- 3. flags --
    run("ingest", "worker", "--encode", "--group", "g", "--out", f"{W}/x", "--vae", tiny, code=2)
    run("ingest", "worker", "--encode", "--from", broker.url("crops"), "--out", f"{W}/x", "--vae", tiny, code=2)
    run("ingest", "worker", "--encode", "--from", broker.url("crops"), "--group", "g", "--vae", tiny, code=2)
    run("ingest", "worker", "--encode", "--from", "/tmp/folder", "--group", "g", "--out", f"{W}/x", "--vae", tiny,
        code=2)
    run("ingest", "worker", "--jobs", broker.url("crops"), "--group", "g", "--out", f"{W}/x", code=2)
    run("ingest", "worker", "--encode", "--from", broker.url("crops"), "--group", "g", "--out", f"{W}/x",
        "--vae", tiny, "--chunk", "0", code=2)
    run("ingest", "worker", "--encode", "--from", broker.url("crops"), "--group", "g", "--out", f"{W}/x",
        "--vae", tiny, "--concurrency", "3", code=2)
    c.check(not os.path.exists(f"{W}/x"), "a bad command line writes nothing")
c.finish()
