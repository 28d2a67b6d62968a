#!/usr/bin/env python3
"""Ingest stage 1 end to end on loopback: ingest_stage_fetch (through
bench/ingest_stage1_driver: fetch with libcurl, SHA-256, decode + centre
crop 256, tokenize, Sample records with raw rgb8 crops in shard files)
against ../shared/bench/peer_ingest.py (img2dataset's per-sample path:
urllib threads, OpenCV decode, INTER_AREA resize, centre crop, JPEG q95
re-encode, tar shards), same manifest, same nginx, same run, several rounds.

Debian's nginx serves the wallpaper photos re-encoded at web sizes
(tests/ingest/make_web_corpus.py: 0.2-0.5 MP, JPEG/WebP/PNG) on one port of
HOSTS loopback addresses. The figure to compare is images per CPU-second of
the fetching processes (user + sys, every thread and child process; nginx
not counted for either side), since the machine is shared; wall images/s is
printed too. Rounds alternate which side runs first; the ratio is reported
per round, then as median and range.

--rss ROWS,ROWS runs ours alone at --rss-concurrency (default 1000) over
--rss-hosts hosts with manifests of those sizes and reports peak RSS
(VmHWM) beside the transfers in flight (transfuse_fetch_in_flight sampled
from /metrics) and the crop queue (transfuse_ingest_queue_depth).
--rss-rate K adds nginx `limit_rate K` for those runs, so that each transfer
lasts long enough for the fetcher, not the crop threads, to be what waits
(a slow web, in effect): then 1,000 transfers really are in flight
(--rss-timeout raises our 30 s attempt timeout so the largest files pass).
Steady state = the samples taken while the row window (4 x concurrency rows
taken in, the stage's default) is full.

--perf FILE records one extra run of ours with `perf record --call-graph
dwarf` and prints where the CPU goes: each sample is charged to the
innermost frame of ours or of a library we call (libc and the kernel are
charged to their caller), by category: decode (libjpeg-turbo, libwebp,
libpng, zlib), resize + crop, tokenizer, SHA-256, curl + fetcher, record
encode + write, stage glue; and how much of each category is kernel time.

usage: bench/ingest_stage1_bench.py [--rows 10000] [--rounds 3] [--hosts 50]
         [--concurrency 64] [--per-host 20] [--threads 0] [--peer-processes 2]
         [--peer-threads 64] [--rss 2000,20000] [--perf perf.data] [--skip-peer] [--png]
Run with /usr/bin/python3 (Debian's python3-opencv and python3-pil).
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, threading, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "ingest", "fetch"))
from servers import Nginx, free_port  # noqa: E402

TOKENIZER = os.path.join(ROOT, "build", "tests", "preprocess", "tokenizer", "npm", "node_modules", "@lenml",
                         "tokenizer-llama3", "models", "tokenizer.json")


def manifest(path, files, captions, port, hosts, rows):
    """TSV with url and caption columns: rows over the corpus, round robin over hosts; distinct URLs."""
    with open(path, "w") as f:
        f.write("url\tcaption\n")
        for i in range(rows):
            k = i % len(files)
            f.write(f"http://127.0.0.{1 + i % hosts}:{port}/{files[k]}?{i}\t{captions[k]} ({i})\n")


def du(path):
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(path) for n in ns)


GAUGES = ("transfuse_fetch_in_flight", 'transfuse_ingest_queue_depth{queue="crop"}', "transfuse_ingest_in_flight")


class Sampler:
    """Samples a gauge from /metrics and VmRSS from /proc while a child runs."""

    def __init__(self, pid, port):
        self.pid, self.port, self.rss, self.gauges, self.rows = pid, port, [], {}, []
        self.stop = threading.Event()
        self.th = threading.Thread(target=self.run)
        self.th.start()

    def run(self):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while not self.stop.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    m = re.search(r"^VmRSS:\s+(\d+)", f.read(), re.M)
                    if m:
                        self.rss.append(int(m.group(1)) / 1024)
            except OSError:
                pass
            if self.port:
                try:
                    text = opener.open(f"http://127.0.0.1:{self.port}/metrics", timeout=1).read().decode()
                    row = {"rss": self.rss[-1] if self.rss else 0}
                    for name in GAUGES:
                        m = re.search(r"^" + re.escape(name) + r"(?:\{[^}]*\})? (\S+)$", text, re.M)
                        if m:
                            self.gauges.setdefault(name, []).append(float(m.group(1)))
                            row[name] = float(m.group(1))
                    self.rows.append(row)
                except OSError:
                    pass
            self.stop.wait(0.1)

    def done(self):
        self.stop.set()
        self.th.join()


def median_of(xs):
    return statistics.median(xs) if xs else 0


def wait_child(p):
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru


def run_ours(a, man, out, concurrency, per_host, metrics=False, perf=None, timeout=0):
    shutil.rmtree(out, ignore_errors=True)
    port = free_port() if metrics else 0
    cmd = [a.driver, "--manifest", man, "--tokenizer", a.tokenizer, "--out", out, "--threads", str(a.threads),
           "--concurrency", str(concurrency), "--per-host", str(per_host)]
    if timeout:
        cmd += ["--timeout", str(timeout)]
    if a.png:
        cmd += ["--png"]
    if port:
        cmd += ["--metrics-port", str(port)]
    if perf:
        cmd = ["perf", "record", "-q", "-F", str(a.perf_freq), "--call-graph", "dwarf,16384", "-o", perf, "--"] + cmd
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    s = Sampler(p.pid, port) if not perf else None
    out_text, err_text = p.communicate() if perf else (None, None)
    if not perf:
        readers, acc = [], {}
        for name, stream in (("out", p.stdout), ("err", p.stderr)):
            t = threading.Thread(target=lambda n=name, st=stream: acc.__setitem__(n, st.read()))
            t.start()
            readers.append(t)
        ru = wait_child(p)
        for t in readers:
            t.join()
        out_text, err_text = acc["out"], acc["err"]
        s.done()
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {err_text[-2000:]}")
    j = json.loads(out_text.strip().splitlines()[-1])
    r = dict(ok=j["succeeded"], failed=j["failed"], failures=j["failures"], wall=j["wall_s"],
             cpu=j["user_s"] + j["sys_s"], user=j["user_s"], sys=j["sys_s"], rss_mb=j["peak_rss_kib"] / 1024,
             out_mb=du(out) / 1e6, mb=j["bytes"] / 1e6, proc_wall=wall)
    if not perf:
        r["ru_cpu"] = ru.ru_utime + ru.ru_stime
        r["rss_samples"] = s.rss
        r["gauges"] = s.gauges
        r["samples"] = s.rows
    shutil.rmtree(out, ignore_errors=True)
    return r


def run_peer(a, man, out):
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    cmd = [sys.executable, a.peer, "--manifest", man, "--processes", str(a.peer_processes), "--threads",
           str(a.peer_threads), "--out", out]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out_text, err_text = p.communicate()
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"peer exited {p.returncode}: {err_text[-2000:]}")
    m = re.search(r"(\d+) ok, (\d+) failed, ([\d.]+) s wall, ([\d.]+) s cpu", out_text)
    ok, failed, pwall, pcpu = int(m.group(1)), int(m.group(2)), float(m.group(3)), float(m.group(4))
    r = dict(ok=ok, failed=failed, wall=pwall, cpu=pcpu, out_mb=du(out) / 1e6, proc_wall=wall)
    shutil.rmtree(out, ignore_errors=True)
    return r


def line(name, r):
    return (f"{name}: {r['ok']} ok, {r['failed']} failed, {r['wall']:.2f} s wall, {r['cpu']:.2f} s cpu, "
            f"{r['ok'] / r['wall']:.0f} images/s, {r['ok'] / max(r['cpu'], 1e-9):.0f} images/cpu-s, "
            f"output {r['out_mb']:.0f} MB" + (f", peak RSS {r['rss_mb']:.0f} MiB" if "rss_mb" in r else ""))


# ---- perf: where the CPU goes ----

CATEGORIES = [  # (category, test on (dso basename, symbol, source file or ""))
    ("decode: libjpeg-turbo", lambda d, s, f: d.startswith("libjpeg") or "image_jpeg.c" in f),
    ("decode: libwebp", lambda d, s, f: d.startswith(("libwebp", "libsharpyuv")) or "image_webp.c" in f),
    ("decode: libpng + zlib", lambda d, s, f: d.startswith(("libpng", "libz.")) or "image_png.c" in f),
    ("resize + crop", lambda d, s, f: "preprocess/image/" in f),
    ("tokenizer", lambda d, s, f: "preprocess/tokenizer/" in f or d.startswith("libpcre")),
    ("SHA-256", lambda d, s, f: "sha256" in f or "sha256" in s.lower()),
    ("curl + fetcher", lambda d, s, f: d.startswith(("libcurl", "libnghttp", "libssl", "libcrypto", "libbrotli",
                                                      "libidn", "libpsl", "libssh", "librtmp", "libzstd"))
     or "ingest/fetch/" in f),
    ("records: encode + write", lambda d, s, f: d.startswith(("libprotobuf-c", "libjansson")) or "shards/" in f
     or "proto/" in f),
    ("stage glue (stage_fetch.c, manifest, stats, metrics)", lambda d, s, f: "ingest/" in f or "core/" in f),
]


def symbol_files(binary):
    """Symbol -> source file of the driver binary (its debug info, via nm -l)."""
    files = {}
    p = subprocess.run(["nm", "-l", "--defined-only", binary], capture_output=True, text=True)
    for ln in p.stdout.splitlines():
        parts = ln.split(None, 3)
        if len(parts) == 4 and parts[1].lower() in "tw":
            files[parts[2]] = parts[3].rsplit(":", 1)[0]
    return files


def perf_split(a, data):
    files = symbol_files(a.driver)
    drv = os.path.basename(a.driver)
    p = subprocess.Popen(["perf", "script", "-i", data, "-F", "comm,tid,ip,sym,dso"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    totals, kernel, threads, n = {}, {}, {}, 0
    stack = []

    def classify(frames):
        leaf_kernel = bool(frames) and "kernel" in frames[0][1]
        for sym, dso in frames:
            if dso == "inlined":  # the function it is inlined into follows, same address
                continue
            d = os.path.basename(dso.strip("()"))
            if "kernel" in dso or d.startswith(("libc.so", "libc-", "ld-linux", "libm.so", "libpthread")) \
                    or d in ("[unknown]", "unknown"):
                continue
            s = sym.split("+")[0]
            f = files.get(s, "") if d == drv else ""
            for name, test in CATEGORIES:
                if test(d, s, f):
                    return name, leaf_kernel
            return f"other: {d if d != drv else s}", leaf_kernel
        return ("kernel, no user frame" if leaf_kernel else "libc / unknown, no caller"), leaf_kernel

    def flush():
        nonlocal n
        if not stack:
            return
        head, frames = stack[0], stack[1:]
        cat, k = classify(frames)
        totals[cat] = totals.get(cat, 0) + 1
        if k:
            kernel[cat] = kernel.get(cat, 0) + 1
        threads[head] = threads.get(head, 0) + 1
        n += 1
        stack.clear()

    for ln in p.stdout:
        if not ln.strip():
            flush()
        elif not ln.startswith((" ", "\t")):
            flush()
            stack.append(ln.split()[1] if len(ln.split()) > 1 else "?")  # thread id
        else:
            parts = ln.strip().split(None, 1)
            rest = parts[1] if len(parts) > 1 else ""
            m = re.match(r"(.*) \((.*)\)$", rest)
            stack.append((m.group(1), m.group(2)) if m else (rest, "[unknown]"))
    flush()
    p.wait()
    print(f"perf: {n} samples (call graphs by DWARF unwinding; a sample is charged to the innermost frame of ours "
          f"or of a library we call, libc and kernel frames to their caller)")
    for cat, c in sorted(totals.items(), key=lambda kv: -kv[1]):
        if c * 1000 >= n:
            print(f"  {100 * c / n:5.1f}%  {cat}  (kernel {100 * kernel.get(cat, 0) / max(c, 1):.0f}% of it)")
    main_tid = min(threads, key=lambda t: int(t) if t.isdigit() else 1 << 62) if threads else "?"
    print(f"  main thread (reader, fetcher, sinks) {100 * threads.get(main_tid, 0) / max(n, 1):.0f}%, "
          f"{len(threads) - 1} other threads (crop workers, metrics) "
          f"{100 * (n - threads.get(main_tid, 0)) / max(n, 1):.0f}%")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--driver", default=os.path.join(ROOT, "build", "bench", "ingest_stage1_driver"))
    ap.add_argument("--tokenizer", default=TOKENIZER)
    ap.add_argument("--peer", default=os.path.join(ROOT, "..", "shared", "bench", "peer_ingest.py"))
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--images", type=int, default=200, help="distinct files in the corpus")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--per-host", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="our crop threads (0: one per CPU)")
    ap.add_argument("--peer-processes", type=int, default=2)
    ap.add_argument("--peer-threads", type=int, default=64)
    ap.add_argument("--nginx-workers", type=int, default=2)
    ap.add_argument("--rss", default="", help="manifest sizes for the RSS runs, e.g. 2000,20000")
    ap.add_argument("--rss-concurrency", type=int, default=1000)
    ap.add_argument("--rss-hosts", type=int, default=100)
    ap.add_argument("--rss-rate", default="", help="nginx limit_rate for the RSS runs, e.g. 16k")
    ap.add_argument("--rss-timeout", type=int, default=0, help="our attempt timeout in s for the RSS runs (0: 30)")
    ap.add_argument("--perf", default="", help="perf.data path: one more run of ours under perf record")
    ap.add_argument("--perf-freq", type=int, default=400)
    ap.add_argument("--work", default="/tmp/transfuse-stage1-bench")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--png", action="store_true", help="our crops as PNG (zlib level 1) instead of raw rgb8")
    a = ap.parse_args()
    for path, what in ((a.driver, "the driver (cmake --build build --target ingest_stage1_driver)"),
                       (a.tokenizer, "the tokenizer (ctest -R tokenizer_fetch_reference)")):
        if not os.path.exists(path):
            print(f"ingest_stage1_bench: {path} is missing: {what}", file=sys.stderr)
            return 2
    corpus = os.path.join(a.work, "corpus")
    rc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "ingest", "make_web_corpus.py"), "--out", corpus,
                         "--count", str(a.images)]).returncode
    if rc:
        return rc
    index = [ln.split("\t") for ln in open(os.path.join(corpus, "index.tsv")).read().splitlines()[1:]]
    files, captions = [r[0] for r in index], [r[1] for r in index]
    fmts = {}
    for r in index:
        fmts[r[4]] = fmts.get(r[4], 0) + 1
    mp = statistics.mean(int(r[2]) * int(r[3]) for r in index) / 1e6
    kb = statistics.mean(int(r[5]) for r in index) / 1e3
    print(f"corpus: {len(files)} images ({', '.join(f'{k} {v}' for k, v in sorted(fmts.items()))}), {mp:.2f} MP and "
          f"{kb:.0f} kB on average; {a.rows} rows over {a.hosts} loopback hosts; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    with Nginx(corpus, os.path.join(a.work, "nginx"), a.nginx_workers, max(a.hosts, a.rss_hosts if a.rss else 1),
               access_log=False) as ngx:
        man = os.path.join(a.work, "rows.tsv")
        manifest(man, files, captions, ngx.port, a.hosts, a.rows)
        ours, peer, ratios, wall_ratios = [], [], [], []
        for k in range(a.rounds):
            order = ("ours", "peer") if k % 2 == 0 or a.skip_peer else ("peer", "ours")
            got = {}
            for side in order:
                if side == "ours":
                    got[side] = run_ours(a, man, os.path.join(a.work, "out-ours"), a.concurrency, a.per_host)
                    print(line(f"round {k + 1} transfuse stage 1 (--concurrency {a.concurrency})", got[side]),
                          flush=True)
                elif not a.skip_peer:
                    got[side] = run_peer(a, man, os.path.join(a.work, "out-peer"))
                    print(line(f"round {k + 1} peer_ingest ({a.peer_processes} x {a.peer_threads} threads)",
                               got[side]), flush=True)
            ours.append(got["ours"])
            if "peer" in got:
                peer.append(got["peer"])
                o, p = got["ours"], got["peer"]
                ratios.append((o["ok"] / o["cpu"]) / (p["ok"] / p["cpu"]))
                wall_ratios.append((o["ok"] / o["wall"]) / (p["ok"] / p["wall"]))
        per = [r["ok"] / r["cpu"] for r in ours] or [0]
        if ours:
            print(f"transfuse: median {median_of(per):.0f} images/cpu-s (range {min(per):.0f}-{max(per):.0f}), "
                  f"{median_of([r['ok'] / r['wall'] for r in ours]):.0f} images/s wall, "
                  f"peak RSS {max(r['rss_mb'] for r in ours):.0f} MiB")
            if peer:
                pp = [r["ok"] / r["cpu"] for r in peer]
                print(f"peer_ingest: median {median_of(pp):.0f} images/cpu-s (range {min(pp):.0f}-{max(pp):.0f}), "
                      f"{median_of([r['ok'] / r['wall'] for r in peer]):.0f} images/s wall")
                print(f"ratio per cpu-second: median {median_of(ratios):.1f}x (range {min(ratios):.1f}-"
                      f"{max(ratios):.1f}x); wall: median {median_of(wall_ratios):.1f}x (range "
                      f"{min(wall_ratios):.1f}-{max(wall_ratios):.1f}x); goal 5x per cpu-second: "
                      f"{'reached' if median_of(ratios) >= 5 else 'not reached'}")
        if a.perf:
            r = run_ours(a, man, os.path.join(a.work, "out-perf"), a.concurrency, a.per_host, perf=a.perf)
            print(line("under perf", r))
            perf_split(a, a.perf)
    if a.rss:
        with Nginx(corpus, os.path.join(a.work, "nginx-rss"), a.nginx_workers, a.rss_hosts, access_log=False,
                   http_extra=f"limit_rate {a.rss_rate};" if a.rss_rate else "") as ngx:
            for rows in [int(x) for x in a.rss.split(",")]:
                man = os.path.join(a.work, f"rows-{rows}.tsv")
                manifest(man, files, captions, ngx.port, a.rss_hosts, rows)
                r = run_ours(a, man, os.path.join(a.work, "out-rss"), a.rss_concurrency, a.per_host, metrics=True,
                             timeout=a.rss_timeout)
                # steady state: the row window full (4 x concurrency rows taken in), the manifest not yet read
                window = 4 * a.rss_concurrency
                steady = [x for x in r["samples"] if x.get("transfuse_ingest_in_flight", 0) >= 0.95 * window]
                print(line(f"rss {rows} rows, --concurrency {a.rss_concurrency} over {a.rss_hosts} hosts"
                           + (f", nginx limit_rate {a.rss_rate}" if a.rss_rate else ""), r))
                if steady:
                    fl = [x.get("transfuse_fetch_in_flight", 0) for x in steady]
                    cq = [x.get('transfuse_ingest_queue_depth{queue="crop"}', 0) for x in steady]
                    rs = [x["rss"] for x in steady]
                    print(f"  steady state ({len(steady)} of {len(r['samples'])} samples, row window {window} full): "
                          f"transfers in flight median {median_of(fl):.0f} (range {min(fl):.0f}-{max(fl):.0f}), "
                          f"bodies waiting for the crop threads median {median_of(cq):.0f} (max {max(cq):.0f}), "
                          f"RSS median {median_of(rs):.0f} MiB (max {max(rs):.0f}; first {rs[0]:.0f}, last "
                          f"{rs[-1]:.0f}); peak (VmHWM) {r['rss_mb']:.0f} MiB", flush=True)
                else:
                    fl = [x.get("transfuse_fetch_in_flight", 0) for x in r["samples"]]
                    print(f"  the row window ({window}) never filled (manifest smaller); transfers in flight max "
                          f"{max(fl) if fl else 0:.0f}; peak (VmHWM) {r['rss_mb']:.0f} MiB", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
