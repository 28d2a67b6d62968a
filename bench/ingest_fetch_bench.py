#!/usr/bin/env python3
"""Fetch-only throughput on loopback: `transfuse ingest fetch` against the
fetch path of ../shared/bench/peer_ingest.py (img2dataset's: urllib in a
thread pool per process, its own fetch() function), same URLs, same nginx,
same run.

Debian's nginx serves the wallpaper photos re-encoded at web sizes
(tests/ingest/make_web_corpus.py: 0.2-0.5 MP, JPEG/WebP/PNG) on one port
of HOSTS loopback addresses (127.0.0.1 .. 127.0.0.HOSTS), so the URLs name
HOSTS different hosts and a high concurrency is not capped by one host.
The figure to compare is images per CPU-second of the fetching processes
(user + sys; nginx's CPU is not counted for either side), since the machine
is shared. For transfuse the script also samples the in-flight gauge from
/metrics during the run and reports the child's peak RSS.

usage: bench/ingest_fetch_bench.py [--transfuse build/cli/transfuse] [--urls 20000]
         [--hosts 50] [--concurrency 64,1000] [--per-host 20] [--peer-processes 2]
         [--peer-threads 64] [--work DIR] [--skip-peer]
Run with /usr/bin/python3 (Pillow, OpenCV for the peer module's import).
"""
import argparse, json, os, re, resource, subprocess, sys, threading, time, urllib.request
from multiprocessing import Pool
from multiprocessing.pool import ThreadPool

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "ingest", "fetch"))
from servers import Nginx, free_port  # noqa: E402


def peer_job(job):
    peer_path, rows, threads = job
    sys.path.insert(0, os.path.dirname(peer_path))
    import peer_ingest  # its fetch(): urllib.request.urlopen(...).read(), timeout 10 s, its UA
    ok = failed = 0
    nbytes = 0
    with ThreadPool(threads) as pool:
        for _, _, _, data, err in pool.imap_unordered(peer_ingest.fetch, rows):
            if data is None:
                failed += 1
            else:
                ok += 1
                nbytes += len(data)
    return ok, failed, nbytes


def run_peer(peer, urls, processes, threads):
    rows = [(i, u, "") for i, u in enumerate(urls)]
    per = -(-len(rows) // processes)
    jobs = [(peer, rows[k * per:(k + 1) * per], threads) for k in range(processes)]
    os.environ.pop("http_proxy", None)
    os.environ.pop("HTTP_PROXY", None)
    c0, t0 = os.times(), time.perf_counter()
    with Pool(processes) as pool:
        res = pool.map(peer_job, jobs, chunksize=1)
    wall = time.perf_counter() - t0
    c1 = os.times()
    cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    ok = sum(r[0] for r in res)
    return dict(ok=ok, failed=sum(r[1] for r in res), wall=wall, cpu=cpu, mb=sum(r[2] for r in res) / 1e6)


def run_ours(tf, url_file, n, concurrency, per_host):
    mport = free_port()
    cmd = [tf, "ingest", "fetch", "--urls", url_file, "--allow-private-networks", "--concurrency", str(concurrency),
           "--per-host", str(per_host), "--metrics-port", str(mport)]
    samples = []
    stop = threading.Event()

    def sample():
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while not stop.is_set():
            try:
                text = opener.open(f"http://127.0.0.1:{mport}/metrics", timeout=1).read().decode()
                m = re.search(r"^transfuse_fetch_in_flight (\S+)$", text, re.M)
                if m:
                    samples.append(float(m.group(1)))
            except OSError:
                pass
            stop.wait(0.05)

    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    th = threading.Thread(target=sample)
    th.start()
    out, err = [], []
    readers = [threading.Thread(target=lambda s, acc: acc.append(s.read()), args=(s, acc))
               for s, acc in ((p.stdout, out), (p.stderr, err))]
    for r in readers:
        r.start()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    for r in readers:
        r.join()
    lines = out[0].splitlines()
    ok = sum(1 for line in lines if line.split("\t")[1] == "ok")
    busy = [s for s in samples if s > 0]
    return dict(ok=ok, failed=len(lines) - ok, wall=wall, cpu=ru.ru_utime + ru.ru_stime, rss_mb=ru.ru_maxrss / 1024,
                in_flight_max=max(samples) if samples else 0,
                in_flight_median=sorted(busy)[len(busy) // 2] if busy else 0,
                mb=sum(int(line.split("\t")[3]) for line in lines) / 1e6, rc=os.waitstatus_to_exitcode(status),
                summary=err[0].strip().splitlines()[-1] if err[0].strip() else "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--transfuse", default=os.path.join(ROOT, "build", "cli", "transfuse"))
    ap.add_argument("--peer", default=os.path.join(ROOT, "..", "shared", "bench", "peer_ingest.py"))
    ap.add_argument("--urls", type=int, default=20000)
    ap.add_argument("--images", type=int, default=200, help="distinct files in the corpus")
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--concurrency", default="64,1000")
    ap.add_argument("--per-host", type=int, default=20)
    ap.add_argument("--peer-processes", type=int, default=2)
    ap.add_argument("--peer-threads", type=int, default=64)
    ap.add_argument("--nginx-workers", type=int, default=2)
    ap.add_argument("--work", default="/tmp/transfuse-fetch-bench")
    ap.add_argument("--skip-peer", action="store_true")
    a = ap.parse_args()
    corpus = os.path.join(a.work, "corpus")
    rc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "ingest", "make_web_corpus.py"), "--out", corpus,
                         "--count", str(a.images)]).returncode
    if rc:
        return rc
    files = [line.split("\t")[0] for line in open(os.path.join(corpus, "index.tsv")).read().splitlines()[1:]]
    total_bytes = sum(os.path.getsize(os.path.join(corpus, f)) for f in files)
    print(f"corpus: {len(files)} images, {total_bytes / len(files) / 1e3:.0f} kB average; {a.urls} URLs over "
          f"{a.hosts} loopback hosts; load average {os.getloadavg()[0]:.1f}")
    with Nginx(corpus, os.path.join(a.work, "nginx"), a.nginx_workers, a.hosts, access_log=False) as ngx:
        urls = [f"http://127.0.0.{1 + i % a.hosts}:{ngx.port}/{files[i % len(files)]}?{i}" for i in range(a.urls)]
        url_file = os.path.join(a.work, "urls.txt")
        with open(url_file, "w") as f:
            f.write("\n".join(urls) + "\n")
        results = []
        for c in [int(x) for x in a.concurrency.split(",")]:
            r = run_ours(a.transfuse, url_file, a.urls, c, a.per_host)
            results.append((f"transfuse concurrency {c}", r))
            print(f"transfuse --concurrency {c} --per-host {a.per_host}: {r['ok']} ok, {r['failed']} failed, "
                  f"{r['wall']:.2f} s wall, {r['cpu']:.2f} s cpu, {r['ok'] / r['wall']:.0f} images/s, "
                  f"{r['ok'] / max(r['cpu'], 1e-9):.0f} images/cpu-s, {r['mb'] / r['wall']:.0f} MB/s, "
                  f"peak RSS {r['rss_mb']:.0f} MiB, in flight median {r['in_flight_median']:.0f} "
                  f"max {r['in_flight_max']:.0f}")
        if not a.skip_peer:
            p = run_peer(os.path.abspath(a.peer), urls, a.peer_processes, a.peer_threads)
            print(f"peer_ingest fetch path ({a.peer_processes} processes x {a.peer_threads} threads): {p['ok']} ok, "
                  f"{p['failed']} failed, {p['wall']:.2f} s wall, {p['cpu']:.2f} s cpu, "
                  f"{p['ok'] / p['wall']:.0f} images/s, {p['ok'] / max(p['cpu'], 1e-9):.0f} images/cpu-s")
            for name, r in results:
                print(f"ratio {name} / peer: {(r['ok'] / r['cpu']) / (p['ok'] / p['cpu']):.1f}x per cpu-second, "
                      f"{(r['ok'] / r['wall']) / (p['ok'] / p['wall']):.1f}x wall")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
