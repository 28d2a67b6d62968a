#!/usr/bin/env python3
"""Integration test of the fetcher through `transfuse ingest fetch`, on
loopback only: Debian's nginx serving the wallpaper photos re-encoded at
web sizes (make_web_corpus.py), and fault_server.py for everything that
goes wrong on the web. Every URL must end as exactly one line with the
outcome this test expects; bodies must be the served bytes; memory stays
bounded under an endless body; 500 URLs at concurrency 200 all succeed
over at most --per-host connections; the per-host rate limit spaces
requests; /metrics shows the transfers in flight; SIGINT stops at once;
bad flags exit 2.

usage: test_fetch.py TRANSFUSE WORKDIR"""
import hashlib, os, shutil, signal, subprocess, sys, tempfile, threading, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from servers import FaultServer, Nginx, free_port, require_nginx, web_corpus  # noqa: E402

T, WORK = sys.argv[1], sys.argv[2]
failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what, file=sys.stderr)
    return cond


require_nginx()
os.makedirs(WORK, exist_ok=True)
corpus = os.path.join(WORK, "corpus")
files = web_corpus(corpus, 16)
sha = {n: hashlib.sha256(open(os.path.join(corpus, n), "rb").read()).hexdigest() for n in files}
jpeg = next(n for n in files if n.endswith(".jpg"))
png = next(n for n in files if n.endswith(".png"))
webp = next(n for n in files if n.endswith(".webp"))
fault_dir = os.path.join(WORK, "fault")
shutil.rmtree(fault_dir, ignore_errors=True)
os.makedirs(fault_dir)
shutil.copy(os.path.join(corpus, jpeg), os.path.join(fault_dir, "img.jpg"))
shutil.copy(os.path.join(corpus, png), os.path.join(fault_dir, "img.png"))
shutil.copy(os.path.join(corpus, webp), os.path.join(fault_dir, "img.webp"))
IMG_SHA = sha[jpeg]

COLS = ["url", "outcome", "status", "bytes", "ms", "reason", "attempts", "redirects", "http_version",
        "content_type", "format", "sha256", "final_url"]


def fetch(urls, *flags, expect_rc=0, env=None):
    """Runs the fetcher on urls (lines as given); returns ({url: row}, stderr, rusage of the child)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=WORK, delete=False) as f:
        f.write("\n".join(urls) + "\n")
        path = f.name
    p = subprocess.Popen([T, "ingest", "fetch", "--urls", path, "--details", *flags],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    got = {}
    readers = [threading.Thread(target=lambda k, s: got.__setitem__(k, s.read()), args=(k, s))
               for k, s in (("out", p.stdout), ("err", p.stderr))]
    for r in readers:
        r.start()
    _, status, ru = os.wait4(p.pid, 0)  # this child's own peak RSS, not the maximum over all children
    p.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    out, err = got["out"], got["err"]
    os.unlink(path)
    check(p.returncode == expect_rc, f"exit {p.returncode} (want {expect_rc}) for {flags}: {err[-2000:]}")
    rows = {}
    for line in out.splitlines():
        fields = line.split("\t")
        check(len(fields) == len(COLS), f"line with {len(fields)} fields: {line!r}")
        row = dict(zip(COLS, fields))
        check(row["url"] not in rows, f"{row['url']} printed twice")
        rows[row["url"]] = row
    return rows, err, ru


def expect(rows, cases):
    """cases: {url: outcome or dict(outcome=..., attempts=..., redirects=..., reason=..., sha=...)}"""
    for url, want in cases.items():
        if isinstance(want, str):
            want = {"outcome": want}
        row = rows.get(url)
        if not check(row is not None, f"{url}: no line"):
            continue
        check(row["outcome"] == want["outcome"],
              f"{url}: outcome {row['outcome']} ({row['reason']}), want {want['outcome']}")
        for k in ("attempts", "redirects", "http_version", "format", "status"):
            if k in want:
                check(row[k] == str(want[k]), f"{url}: {k} {row[k]}, want {want[k]}")
        if "reason" in want:
            check(want["reason"] in row["reason"], f"{url}: reason {row['reason']!r} lacks {want['reason']!r}")
        if "sha" in want:
            check(row["sha256"] == want["sha"], f"{url}: sha256 {row['sha256']}, want {want['sha']}")
    check(len(rows) == len(cases), f"{len(rows)} lines for {len(cases)} URLs")


with Nginx(corpus, os.path.join(WORK, "nginx")) as ngx, \
        FaultServer(fault_dir, also=["127.0.0.2"]) as fs:
    N = f"http://127.0.0.1:{ngx.port}"
    F = fs.url
    LOOP = ["--allow-address", "127.0.0.1/32"]  # the servers' address; 127.0.0.2 stays refused
    FAST = ["--timeout", "2", "--connect-timeout", "5", "--retry-base", "0.05", "--retry-max", "5"]

    # 1. every outcome class the fault server can produce, in one run
    cases = {
        N + "/" + jpeg: dict(outcome="ok", sha=sha[jpeg], format="jpeg", attempts=1, http_version=11),
        N + "/" + png: dict(outcome="ok", sha=sha[png], format="png"),
        N + "/" + webp: dict(outcome="ok", sha=sha[webp], format="webp"),
        N + "/no-such-file.jpg": dict(outcome="http_404", status=404, attempts=1),
        F("/image/img.jpg"): dict(outcome="ok", sha=IMG_SHA),
        F("/image/img.jpg?ct=text/html"): dict(outcome="ok", sha=IMG_SHA, format="jpeg"),
        F("/image/img.png?ct=none"): dict(outcome="ok", format="png"),
        F("/image/img.webp?ct=application/octet-stream"): dict(outcome="ok", format="webp"),
        F("/html"): dict(outcome="not_image", reason="HTML"),
        F("/html?ct=text/html"): dict(outcome="not_image", reason="HTML"),
        F("/empty"): dict(outcome="not_image", reason="empty body"),
        F("/status/404"): dict(outcome="http_404", attempts=1),
        F("/status/403"): dict(outcome="http_403", attempts=1),
        F("/status/410"): "http_410",
        F("/status/500"): dict(outcome="http_500", attempts=3),
        F("/status/503"): dict(outcome="http_503", attempts=3),
        F("/status/304"): "http_304",
        F("/flaky/f1?n=1"): dict(outcome="ok", attempts=2, sha=IMG_SHA),
        F("/flaky/f2?n=2&code=502"): dict(outcome="ok", attempts=3),
        F("/flaky/f3?n=5"): dict(outcome="http_500", attempts=3),
        F("/retry-after/r1?n=1&v=1"): dict(outcome="ok", attempts=2),
        F("/retry-after/r2?n=1&v=date%2B2"): dict(outcome="ok", attempts=2),
        F("/retry-after/r3?n=1&v=1&code=503"): dict(outcome="ok", attempts=2),
        F("/retry-after/r4?n=1&v=3600"): dict(outcome="http_429", attempts=1, reason="Retry-After 3600"),
        F("/slow/img.jpg?s=10"): dict(outcome="timeout", attempts=3),
        F("/truncated/img.jpg"): dict(outcome="truncated"),
        F("/redirect/1"): dict(outcome="ok", redirects=1, sha=IMG_SHA),
        F("/redirect/5"): dict(outcome="ok", redirects=5),
        F("/redirect/6"): dict(outcome="too_many_redirects", redirects=5),
        F("/loop/a"): dict(outcome="redirect_loop", redirects=1),
        F("/to?u=/to%3Fu%3D/loop/a"): "redirect_loop",
        F("/to?u=" + N + "/" + png): dict(outcome="ok", redirects=1, sha=sha[png]),
        F("/to?u=file:///etc/passwd"): dict(outcome="forbidden_scheme", reason="redirect"),
        F("/to?u=ftp://127.0.0.1/x"): "forbidden_scheme",
        F("/to?u=http://127.0.0.2:%d/image/img.jpg" % fs.port): dict(outcome="private_address",
                                                                     reason="127.0.0.2"),
        F("/to?code=307&u=/image/img.jpg"): dict(outcome="ok", redirects=1),
        F("/to?code=308&u=/image/img.jpg"): dict(outcome="ok", redirects=1),
        F("/robots/img.jpg?h=noai"): dict(outcome="opted_out", reason="noai"),
        F("/robots/img.jpg?h=noimageai"): "opted_out",
        F("/robots/img.jpg?h=noindex"): "opted_out",
        F("/robots/img.jpg?h=NoImageIndex"): "opted_out",
        F("/robots/img.jpg?h=none"): "opted_out",
        F("/robots/img.jpg?h=nofollow,%20noimageai"): "opted_out",
        F("/robots/img.jpg?h=transfuse:%20noai"): "opted_out",
        F("/robots/img.jpg?h=TransFuse:noimageai,%20nofollow"): "opted_out",
        F("/robots/img.jpg?h=otherbot:%20noai"): dict(outcome="ok", sha=IMG_SHA),
        F("/robots/img.jpg?h=otherbot:%20noindex,%20nofollow"): "ok",
        F("/robots/img.jpg?h=otherbot:%20noai&h=noimageindex"): "opted_out",
        F("/robots/img.jpg?h=otherbot:%20noai&h=transfuse:%20noindex"): "opted_out",
        F("/robots/img.jpg?h=nofollow&h=noarchive"): "ok",
        F("/robots/img.jpg?h=unavailable_after:%2025%20Jun%202010%2015:00:00%20PST"): "ok",
        F("/endless?cl=3000000000"): dict(outcome="too_large", reason="Content-Length 3000000000"),
        "http://127.0.0.1:%d/image/img.jpg" % fs.port + "?again": "ok",
        "http://127.0.0.2:%d/image/img.jpg" % fs.port: dict(outcome="private_address", reason="loopback"),
        "http://public.example:%d/image/img.jpg" % fs.port: dict(outcome="private_address",
                                                                 reason="127.0.0.2 (loopback)"),
        "http://[::1]:%d/image/img.jpg" % fs.port: "private_address",
        "http://10.0.0.1:%d/x" % fs.port: dict(outcome="private_address", reason="private"),
        "http://169.254.169.254/latest/meta-data/": dict(outcome="private_address", reason="link-local"),
        "http://0.0.0.0:%d/x" % fs.port: "private_address",
        "http://127.0.0.1:1/nothing-listens": dict(outcome="connect", attempts=1),
        "http://no-such-host.invalid/x.jpg": "dns",
        "ftp://127.0.0.1/x.jpg": "forbidden_scheme",
        "file:///etc/hostname": "forbidden_scheme",
        "/etc/hostname": "forbidden_scheme",
        "gopher://127.0.0.1/x": "forbidden_scheme",
        "http://": "bad_url",
        "not a url": "bad_url",
        F("/image/img.jpg?hash=right") + "\t" + IMG_SHA: dict(outcome="ok", sha=IMG_SHA),
        F("/image/img.jpg?hash=wrong") + "\t" + "00" * 32: dict(outcome="hash_mismatch", reason=IMG_SHA),
    }
    rows, err, _ = fetch(list(cases), *LOOP, *FAST, "--resolve", "public.example:%d:127.0.0.2" % fs.port,
                         "--max-redirects", "5", "--retries", "2")
    expect(rows, {u.split("\t")[0]: w for u, w in cases.items()})
    check("failed:" in err and "http_404 2" in err, f"summary line: {err.strip()[-300:]}")

    # 2. allowing private networks: the refused destinations are reachable, so refusal was the check
    allowed = {
        "http://127.0.0.2:%d/image/img.jpg" % fs.port: dict(outcome="ok", sha=IMG_SHA),
        "http://public.example:%d/image/img.jpg" % fs.port: dict(outcome="ok", sha=IMG_SHA),
        F("/to?u=http://public.example:%d/image/img.jpg" % fs.port): dict(outcome="ok", redirects=1),
    }
    rows, _, _ = fetch(list(allowed), "--allow-private-networks", *FAST,
                       "--resolve", "public.example:%d:127.0.0.2" % fs.port)
    expect(rows, allowed)

    # 3. --ignore-robots, --any-content, --allow-file (a redirect never reaches a file)
    local = os.path.join(corpus, jpeg)
    more = {
        F("/robots/img.jpg?h=noai"): dict(outcome="ok", sha=IMG_SHA),
        F("/html"): dict(outcome="ok", format="unknown"),
        "file://" + local: dict(outcome="ok", sha=sha[jpeg]),
        local: dict(outcome="ok", sha=sha[jpeg]),
        "file:///no/such/file.jpg": dict(outcome="read", reason="No such file"),
        "file://" + fault_dir: dict(outcome="read", reason="not a regular file"),
        F("/to?u=file://" + local): "forbidden_scheme",
    }
    rows, _, _ = fetch(list(more), *LOOP, *FAST, "--ignore-robots", "--any-content", "--allow-file")
    expect(rows, more)
    tiny = {"file://" + local: dict(outcome="too_large"), F("/image/img.jpg"): dict(outcome="too_large")}
    rows, _, _ = fetch(list(tiny), *LOOP, *FAST, "--allow-file", "--max-size", "1000")
    expect(rows, tiny)

    # 4. an endless body: stopped at the cap, memory bounded (the default cap, 64 MiB, two at once)
    fs.reset()
    endless = {F("/endless"): dict(outcome="too_large", reason="67108864"),
               F("/endless?second"): dict(outcome="too_large")}
    # In the sanitizer build, freed blocks wait in ASan's quarantine (256 MiB by default): keep it small
    # so the peak measures what the fetcher holds.
    env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4")
    rows, _, ru = fetch(list(endless), *LOOP, "--timeout", "120", env=env)
    expect(rows, endless)
    sent = fs.stats()["bytes_sent"].get("endless", 0)
    peak_mb = ru.ru_maxrss / 1024
    print(f"endless bodies: server sent {sent / 2**20:.0f} MiB, fetcher peak RSS {peak_mb:.0f} MiB "
          "")
    check(sent >= 2 * 64 * 2**20, f"server sent only {sent} bytes: the cap was not what stopped it")
    check(peak_mb < 2 * 64 + 96, f"peak RSS {peak_mb:.0f} MiB with two 64 MiB caps")

    # 5. 500 URLs at concurrency 200 against nginx: all ok, at most --per-host connections, reused
    open(ngx.access_log, "w").close()
    many = {N + "/" + files[i % len(files)] + "?n=%d" % i: dict(outcome="ok", sha=sha[files[i % len(files)]])
            for i in range(500)}
    rows, err, _ = fetch(list(many), "--allow-private-networks", "--concurrency", "200", "--per-host", "6")
    expect(rows, many)
    log = [r for r in ngx.log() if "?n=" in r[3]]
    conns = {c for c, _, _, _ in log}
    print(f"500 URLs at concurrency 200: {len(log)} requests over {len(conns)} connections, "
          f"at most {max(n for _, n, _, _ in log)} on one")
    check(len(log) == 500, f"nginx saw {len(log)} requests")
    check(len(conns) <= 6, f"{len(conns)} connections to one host with --per-host 6")
    check(max(n for _, n, _, _ in log) > 1, "no connection was reused")

    # 6. at most --per-host in flight at once, as the server sees it
    fs.reset()
    hold = {F("/hold/img.jpg?s=0.2&i=%d" % i): "ok" for i in range(40)}
    rows, _, _ = fetch(list(hold), *LOOP, "--concurrency", "40", "--per-host", "4")
    expect(rows, hold)
    peak = fs.stats()["max_in_flight"].get("hold", 0)
    print(f"per-host cap 4: the server saw at most {peak} requests at once")
    check(2 <= peak <= 4, f"server saw {peak} requests in flight at once with --per-host 4")

    # 7. the per-host rate limit: 30 requests at 20/s with a burst of 5 take at least (30-5)/20 s
    fs.reset()
    rate = {F("/image/img.jpg?r=%d" % i): "ok" for i in range(30)}
    rows, _, _ = fetch(list(rate), *LOOP, "--host-rate", "20", "--host-burst", "5")
    expect(rows, rate)
    arrivals = sorted(fs.stats()["arrivals"]["image"])
    span = arrivals[-1] - arrivals[0]
    print(f"host rate 20/s, burst 5: 30 requests over {span:.2f} s")
    check(span >= (30 - 5) / 20 * 0.95, f"30 requests took only {span:.2f} s at 20/s with burst 5")

    # 8. TLS: a self-signed certificate is refused; trusted with --ca-file it works, over HTTP/2
    if ngx.cert:
        S = f"https://127.0.0.1:{ngx.tls_port}/" + jpeg
        rows, _, _ = fetch([S], "--allow-private-networks")
        expect(rows, {S: dict(outcome="tls")})
        rows, _, _ = fetch([S], "--allow-private-networks", "--ca-file", ngx.cert)
        expect(rows, {S: dict(outcome="ok", sha=sha[jpeg], http_version=20)})
        # many requests to one HTTP/2 host share one connection (multiplexed)
        open(ngx.access_log, "w").close()
        h2 = {S + "?h2=%d" % i: dict(outcome="ok", http_version=20) for i in range(40)}
        rows, _, _ = fetch(list(h2), "--allow-private-networks", "--ca-file", ngx.cert, "--per-host", "8")
        expect(rows, h2)
        conns = {c for c, _, _, uri in ngx.log() if "?h2=" in uri}
        print(f"HTTP/2: 40 requests over {len(conns)} connection(s)")
        check(len(conns) == 1, f"40 HTTP/2 requests used {len(conns)} connections")
    else:
        print("openssl missing: TLS cases skipped")

    # 9. --out saves the bodies by line number with the sniffed extension
    out = os.path.join(WORK, "saved")
    shutil.rmtree(out, ignore_errors=True)
    rows, _, _ = fetch([N + "/" + png, F("/status/404")], "--allow-private-networks", "--out", out)
    saved = sorted(os.listdir(out))
    check(saved == ["00000001.png"], f"saved {saved}")
    if saved:
        check(hashlib.sha256(open(os.path.join(out, saved[0]), "rb").read()).hexdigest() == sha[png],
              "saved body differs from the served file")

    # 10. SIGINT stops at once with 130, even with a response hanging
    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=WORK, delete=False) as f:
        f.write(F("/slow/img.jpg?s=600") + "\n")
    mport = free_port()
    p = subprocess.Popen([T, "ingest", "fetch", "--urls", f.name, *LOOP, "--timeout", "900",
                          "--metrics-port", str(mport)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = ""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(100):  # the metrics endpoint shows the hanging transfer in flight
        try:
            metrics = opener.open(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
            if "\ntransfuse_fetch_in_flight 1\n" in metrics:
                break
        except OSError:
            pass
        time.sleep(0.1)
    check("\ntransfuse_fetch_in_flight 1\n" in metrics, f"/metrics during the run: {metrics[-500:]!r}")
    p.send_signal(signal.SIGINT)
    try:
        p.communicate(timeout=60)
        check(p.returncode == 130, f"exit {p.returncode} after SIGINT, want 130")
    except subprocess.TimeoutExpired:
        p.kill()
        check(False, "still running 60 s after SIGINT")
    os.unlink(f.name)

# 11. usage errors exit 2 before any work
for argv in (["ingest", "fetch"], ["ingest", "fetch", "--urls", "x", "--bogus"],
             ["ingest", "fetch", "--urls", "x", "--concurrency", "0"],
             ["ingest", "fetch", "--urls", "x", "--allow-address", "not-a-network"],
             ["ingest", "fetch", "--urls", "x", "--max-size", "0"]):
    p = subprocess.run([T, *argv], capture_output=True, text=True)
    check(p.returncode == 2, f"{argv}: exit {p.returncode}, want 2 ({p.stderr.strip()})")
with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=WORK, delete=False) as f:
    f.write("http://127.0.0.1:1/x\tnot-hex\n")
p = subprocess.run([T, "ingest", "fetch", "--urls", f.name], capture_output=True, text=True)
check(p.returncode == 2 and ":1:" in p.stderr, f"bad hash column: exit {p.returncode}: {p.stderr.strip()}")
p = subprocess.run([T, "ingest", "fetch", "--urls", "/no/such/list.txt"], capture_output=True, text=True)
check(p.returncode == 3, f"missing URL file: exit {p.returncode}, want 3")
os.unlink(f.name)

print(f"test_fetch: {failures} failure(s)")
sys.exit(1 if failures else 0)
