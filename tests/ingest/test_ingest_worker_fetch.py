#!/usr/bin/env python3
"""test_ingest_worker_fetch: `transfuse ingest worker --jobs` (stage 1) on
the embedded broker, jobs from `ingest plan` on a two-partition topic, the
images served on loopback by Debian's nginx (the web corpus) and by the
fault server (slow responses).
  1. share: worker A runs a first plan's jobs alone; worker B joins (both
     log their assignments); a second plan's jobs go to both partitions:
     both run jobs, every row's key is in the output exactly once, every
     job has its stats file.
  2. SIGKILL: worker A is killed while a job is half written (its fast rows
     published, a slow row still in flight, no stats file); worker B takes
     the partitions after the session timeout and redoes the job: every key
     exactly once, none lost; a job whose stats file exists is committed
     without running (its rows are not fetched again).
  3. a job planned with other stage options is refused (exit 3).
Waits are bounded; nothing is timed.

    test_ingest_worker_fetch.py TRANSFUSE TOKENIZER_JSON WORKDIR
"""
import os
import shutil
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "fetch"))
from checks import Checks  # noqa: E402
from servers import FaultServer, Nginx, nginx_path  # noqa: E402
from stage1_records import Broker, keys_of, records_in, stop_process, wait_for, exactly_once  # noqa: E402

T, TOK, W = sys.argv[1:4]
c = Checks("test_ingest_worker_fetch")
if not os.path.exists(TOK):
    print(f"skipped: {TOK} is missing (the tokenizer_fetch_reference fixture did not run)")
    sys.exit(77)
if not nginx_path():
    print("skipped: nginx is not installed (scripts/install-deps.sh --test)")
    sys.exit(77)
shutil.rmtree(W, ignore_errors=True)
os.makedirs(W)
corpus = os.path.join(W, "corpus")
rc = subprocess.run([sys.executable, os.path.join(HERE, "make_web_corpus.py"), "--out", corpus, "--count", "6",
                     "--jobs", "2"]).returncode
if rc == 77:
    print("skipped: no wallpaper photos installed")
    sys.exit(77)
c.check(rc == 0, "make_web_corpus.py")
files = [l.split("\t")[0] for l in open(os.path.join(corpus, "index.tsv")).read().splitlines()[1:]]
fault_dir = os.path.join(W, "fault")
os.makedirs(fault_dir)
shutil.copy(os.path.join(corpus, next(n for n in files if n.endswith(".jpg"))), os.path.join(fault_dir, "img.jpg"))


def run(*argv, code=0, **kw):
    p = subprocess.run([T, *argv], capture_output=True, **kw)
    c.check(p.returncode == code, f"{argv[:3]}: exit {p.returncode}, wanted {code}: {p.stderr.decode()[-2000:]}")
    return p


def log(name):
    return open(f"{W}/{name}.log").read()








def stats_files(out, prefix):
    d = f"{out}/ingest-jobs"
    return sorted(f for f in os.listdir(d) if f.startswith(prefix) and f.endswith(".fetch.json")) \
        if os.path.isdir(d) else []






def manifest(name, urls):
    path = os.path.join(W, name)
    with open(path, "w") as f:
        f.write("url\tcaption\n")
        for i, u in enumerate(urls):
            f.write(f"{u}\t{name} row {i}\n")
    return path


with Nginx(corpus, os.path.join(W, "nginx")) as ngx, FaultServer(fault_dir) as fs, \
        Broker(T, W, "jobs:2", "kjobs:2") as broker:
    N = f"http://127.0.0.1:{ngx.port}"

    def worker(name, jobs, group, out, *extra):
        f = open(f"{W}/{name}.log", "w")
        return subprocess.Popen([T, "ingest", "worker", "--jobs", broker.url(jobs), "--group", group, "--out", out,
                                 "--tokenizer", TOK, "--threads", "1", "--allow-private-networks", *extra],
                                stdout=f, stderr=f)

    # -- 1. share --
    m1 = manifest("wave1.tsv", [f"{N}/{files[i % len(files)]}" for i in range(12)])
    m2 = manifest("wave2.tsv", [f"{N}/{files[i % len(files)]}" for i in range(12)])
    out = f"{W}/share"
    run("ingest", "plan", "--manifest", m1, "--job-size", "3", "--to", broker.url("jobs"))
    a = worker("a", "jobs", "share", out)
    wait_for(c, lambda: len(stats_files(out, "wave1")) == 4, "worker A to run the first plan", procs=(a,))
    b = worker("b", "jobs", "share", out)
    wait_for(c, lambda: "assigned partition" in log("b") and log("a").count("assigned partition") >= 2,
         "the rebalance that gives B partitions", procs=(a, b))
    run("ingest", "plan", "--manifest", m2, "--job-size", "3", "--to", broker.url("jobs"))
    wait_for(c, lambda: len(stats_files(out, "wave2")) == 4, "the second plan's jobs", procs=(a, b))
    stop_process(c, a, "a", lambda: log("a"))
    stop_process(c, b, "b", lambda: log("b"))
    exactly_once(c, keys_of(T, out), 24, "share")
    run("shards", "verify", out)
    for name in ("a", "b"):
        c.check("job wave" in log(name) and " rows: " in log(name), f"worker {name} ran jobs: {log(name)[-1500:]}")
    print(f"share: a ran {log('a').count(' rows: ')} jobs, b {log('b').count(' rows: ')}")

    # -- 2. SIGKILL mid-job: each job has fast rows and one slow one --
    urls = []
    for j in range(4):
        urls += [f"{N}/{files[(3 * j + k) % len(files)]}" for k in range(3)]
        urls.append(fs.url(f"/slow/img.jpg?s=3&j={j}"))
    mk = manifest("kill.tsv", urls)
    out2 = f"{W}/kill_out"
    run("ingest", "plan", "--manifest", mk, "--job-size", "4", "--to", broker.url("kjobs"))
    a = worker("ka", "kjobs", "kill", out2, "--shard-records", "1")
    wait_for(c, lambda: records_in(out2) >= 1, "worker A's first shard", procs=(a,))
    a.send_signal(signal.SIGKILL)
    a.wait()
    at_kill = keys_of(T, out2)
    done_at_kill = stats_files(out2, "kill")
    c.check(0 < len(at_kill) and len(at_kill) > 4 * len(done_at_kill),
            f"the kill came in the middle of a job: {len(at_kill)} records, done {done_at_kill}")
    b = worker("kb", "kjobs", "kill", out2, "--shard-records", "1")
    wait_for(c, lambda: len(stats_files(out2, "kill")) == 4, "worker B to redo the killed job and finish",
             procs=(b,))
    stop_process(c, b, "kb", lambda: log("kb"))
    exactly_once(c, keys_of(T, out2), 16, "kill")
    run("shards", "verify", out2)
    redone = [l for l in log("kb").splitlines() if " rows: " in l and "already there" in l
              and " 0 already there" not in l]
    c.check(redone, f"B redid the killed job, skipping what was durable: {log('kb')[-1500:]}")
    print(f"kill: {len(at_kill)} records durable at the kill, done jobs {done_at_kill}; B: {redone}")

    # a job done before (stats file there) is committed without running
    run("ingest", "plan", "--manifest", mk, "--job-size", "4", "--to", broker.url("kjobs"))
    b = worker("kc", "kjobs", "kill", out2)
    wait_for(c, lambda: log("kc").count("is done already") == 4, "the replanned jobs to be found done",
             procs=(b,))
    stop_process(c, b, "kc", lambda: log("kc"))
    c.check(" rows: " not in log("kc"), f"no job ran again: {log('kc')[-1500:]}")

    # -- 3. a job planned with other stage options is refused --
    run("ingest", "plan", "--manifest", m1, "--job-size", "100", "--size", "128", "--to", broker.url("jobs"))
    p = subprocess.run([T, "ingest", "worker", "--jobs", broker.url("jobs"), "--group", "other", "--out", f"{W}/o",
                        "--tokenizer", TOK], capture_output=True, timeout=300)
    c.check(p.returncode == 3 and b"other stage options" in p.stderr, f"refused: {p.returncode} {p.stderr[-800:]}")
c.finish()
