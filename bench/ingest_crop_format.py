#!/usr/bin/env python3
"""Stage 1's crop format, measured: ingest_stage_fetch (through the test
driver, build/tests/ingest/stage_fetch_driver: stage 1 alone, as `ingest
run` runs it per job) over nginx on loopback (the wallpaper corpus of
tests/ingest/make_web_corpus.py) with raw and png (zlib level 1) crops, one
crop thread.
Reports CPU seconds per row (user + system of the process, less a 1-row
run's start-up cost: tokenizer load, planning) and bytes per record. CPU
time, not wall time, so a busy shared machine does not skew it.

usage: /usr/bin/python3 bench/ingest_crop_format.py STAGE_FETCH_DRIVER TOKENIZER_JSON WORKDIR [--count N] [--reps R]"""
import argparse, os, shutil, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "ingest", "fetch"))
from servers import Nginx  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("driver")
ap.add_argument("tokenizer")
ap.add_argument("work")
ap.add_argument("--count", type=int, default=200)
ap.add_argument("--reps", type=int, default=2)
a = ap.parse_args()
corpus = os.path.join(a.work, "corpus")
subprocess.run([sys.executable, os.path.join(HERE, "..", "tests", "ingest", "make_web_corpus.py"), "--out", corpus,
                "--count", str(a.count), "--jobs", "2"], check=True)
files = [line.split("\t")[0] for line in open(os.path.join(corpus, "index.tsv")).read().splitlines()[1:]]


def ingest(manifest, fmt):
    out = os.path.join(a.work, "out_" + fmt)
    shutil.rmtree(out, ignore_errors=True)
    p = subprocess.Popen([a.driver, "--manifest", manifest, "--tokenizer", a.tokenizer, "--job", "bench.000000",
                          "--out", out, "--threads", "1", "--allow-address", "127.0.0.1/32", "--concurrency", "16",
                          *(["--png"] if fmt == "png" else [])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"stage 1 with {fmt} crops failed"
    size = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out) if n.endswith(".tfrecord"))
    return ru.ru_utime + ru.ru_stime, size, ru.ru_maxrss


with Nginx(corpus, os.path.join(a.work, "nginx"), access_log=False) as ngx:
    man, one = os.path.join(a.work, "m.tsv"), os.path.join(a.work, "one.tsv")
    with open(man, "w") as f:
        f.write("url\tcaption\n")
        for n in files:
            f.write(f"http://127.0.0.1:{ngx.port}/{n}\ta photo, {n}\n")
    with open(one, "w") as f:
        f.write(f"url\tcaption\nhttp://127.0.0.1:{ngx.port}/{files[0]}\tone\n")
    for fmt in ("raw", "png"):
        base = min(ingest(one, fmt)[0] for _ in range(a.reps))
        cpu, size, rss = min(ingest(man, fmt) for _ in range(a.reps))
        per = (cpu - base) / len(files)
        print(f"{fmt}: {per * 1e3:.2f} ms CPU per row ({1 / per:.0f} rows/s per core), "
              f"{size / len(files) / 1e3:.1f} kB per record, peak RSS {rss / 1024:.0f} MiB "
              f"({len(files)} rows, start-up {base:.2f} s CPU)")
