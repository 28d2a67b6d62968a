#!/usr/bin/env python3
"""Integration test of `transfuse top`, used as a person would: against a
running `transfuse broker` registered in a discovery folder (with records
published to it and a consumer group committing), a fake deployment of
ingest, encode and trainer endpoints whose counters grow (fake_exporter.py)
and hostile endpoints (not the format, 20 MB, a 200 KiB line, 300,000
series, a 404, invalid UTF-8, terminal escapes in a label, one that never
answers in time).

  - `--once --json`: every row and figure the contract promises, errors as
    error rows, Kafka watermarks, committed offsets and lag read from the
    cluster, stale and bad registrations, a clean exit removing the file;
  - `--prometheus-sd`: the file_sd target file, which Prometheus' own
    `promtool check service-discovery` reads back;
  - the live view in tmux: rows appear, s sorts, p pauses (the round number
    stops) and resumes, a resized window is redrawn within its width, q
    quits with status 0, Ctrl-C with 130, the terminal restored;
  - in a pseudo-terminal: the alternate screen, frames that start at the
    cursor's home with no clear-screen after the first, no escape byte from
    an endpoint reaching the terminal;
  - usage errors exit 2 before any work.

usage: test_top.py TRANSFUSE WORKDIR"""
import json, os, pty, select, shutil, signal, socket, subprocess, sys, time

T, WORK = sys.argv[1], sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
failures = 0
procs = []


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what, file=sys.stderr)
    return cond


def wait_for(pred, timeout=30.0, step=0.2):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def run(*argv, ok=(0,), **kw):
    p = subprocess.run([T, *argv], capture_output=True, text=True, **kw)
    if p.returncode not in ok:
        print(f"exit {p.returncode} from {argv}:\n{p.stderr}", file=sys.stderr)
    return p


def start(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    procs.append(p)
    return p


def cleanup():
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    subprocess.run(["tmux", "kill-server"], env=TMUX_ENV, capture_output=True)


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
REG = os.path.join(WORK, "reg")
TMUX_ENV = dict(os.environ, TMUX_TMPDIR=WORK)
TMUX_ENV.pop("TMUX", None)

try:
    # ---- usage errors come before any work ----
    check(run("top", ok=(2,)).returncode == 2, "no targets is a usage error")
    check(run("top", "--targets", "127.0.0.1:1", "--json", ok=(2,)).returncode == 2, "--json needs --once")
    check(run("top", "--targets", "127.0.0.1:1", "--bogus", ok=(2,)).returncode == 2, "unknown option")
    check(run("top", "--targets", "127.0.0.1:1", "--interval", "0", ok=(2,)).returncode == 2, "interval 0")
    check(run("top", "--targets", "127.0.0.1:1", ok=(2,)).returncode == 2, "live view without a terminal")
    check(run("top", "--targets", "127.0.0.1:1", "--prometheus-sd", "x.json", "--once", ok=(2,)).returncode == 2,
          "--prometheus-sd without --discover")
    check(run("top", "--kafka", "http://x/y", "--once", ok=(2,)).returncode == 2, "a bad --kafka address")
    check("keys: q quit" in run("top", "--help").stdout, "--help names the keys")

    # ---- the broker, registered ----
    bs_file = os.path.join(WORK, "bs")
    broker = start([T, "broker", "--topic", "samples:3", "--register", REG, "--bootstrap-file", bs_file],
                   stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, "broker.err"), "w"))
    check(wait_for(lambda: os.path.exists(bs_file) and os.listdir(REG) if os.path.isdir(REG) else None),
          "broker registered")
    bs = open(bs_file).read().strip()
    regs = [f for f in os.listdir(REG) if f.endswith(".json")]
    check(len(regs) == 1 and regs[0].startswith("broker-") and regs[0].endswith(f"-{broker.pid}.json"),
          f"registration name: {regs}")
    reg = json.load(open(os.path.join(REG, regs[0])))
    check(reg["pid"] == broker.pid and reg["command"] == "broker" and reg["addr"] == "127.0.0.1" and
          reg["port"] > 0 and "--register" in reg["argv"] and reg["started"] > 0, f"registration: {reg}")

    # ---- the fake deployment ----
    ports_file = os.path.join(WORK, "ports")
    roles = ["ingest", "encode", "trainer0", "trainer1", "trainer2", "garbage", "huge", "longline", "escape",
             "many", "notfound", "badutf8", "slow"]
    start([PY, os.path.join(HERE, "fake_exporter.py"), ports_file, ",".join(roles)],
          env=dict(os.environ, FAKE_BOOTSTRAP=bs))
    if not wait_for(lambda: os.path.exists(ports_file)):
        raise SystemExit("fake exporter did not start")
    port = {r: int(p) for r, p in (l.split() for l in open(ports_file))}
    addr = {r: f"127.0.0.1:{p}" for r, p in port.items()}
    targets = ",".join(addr[r] for r in roles)

    # stale and bad entries beside it
    with open(os.path.join(REG, "ingest-gone-999999.json"), "w") as f:   # no such PID here
        json.dump({"pid": 4194303, "host": socket.gethostname(), "addr": "127.0.0.1", "port": 1,
                   "command": "ingest", "started": time.time() - 10}, f)
    with open(os.path.join(REG, "train-far-1.json"), "w") as f:          # another host, old, not answering
        json.dump({"pid": 1, "host": "far.invalid", "addr": "127.0.0.1", "port": 9, "command": "train",
                   "started": time.time() - 3600}, f)
    with open(os.path.join(REG, "junk.json"), "w") as f:
        f.write("{not json")
    with open(os.path.join(REG, "broker-x.json.tmp.1"), "w") as f:      # an atomic write in progress
        f.write("{")

    # records on the topic, nothing committed by group g1 yet
    ds = os.path.join(WORK, "ds")
    lines = "".join(json.dumps({"key": f"k{i:03d}", "caption": f"caption {i}"}) + "\n" for i in range(90))
    check(run("shards", "import", "--out", ds, input=lines).returncode == 0, "import")
    check(run("shards", "publish", ds, "--to", f"kafka://{bs}/samples").returncode == 0, "publish")

    def once(*extra):
        p = run("top", "--once", "--json", "--targets", targets, "--discover", REG, "--group", "g1",
                "--timeout", "2", "--interval", "1", "--stale-after", "60", *extra, ok=(0, 1))
        return p, json.loads(p.stdout) if p.stdout.strip() else {}

    p, snap = once()
    check(p.returncode == 1, f"--once exits 1 when a target fails (got {p.returncode})")
    tg = {t["target"]: t for t in snap.get("targets", [])}
    for role, want in [("garbage", "bad metrics: line 1"), ("huge", "larger than"), ("longline", "longer than"),
                       ("many", "more than 200000 series"), ("notfound", "HTTP status 404"),
                       ("badutf8", "not valid UTF-8"), ("slow", "Timeout")]:
        t = tg.get(addr[role], {})
        check(t.get("state") == "error" and want in t.get("error", ""), f"{role} is an error row: {t}")
    for role in ("ingest", "encode", "trainer0", "trainer1", "trainer2", "escape"):
        check(tg.get(addr[role], {}).get("state") == "ok", f"{role} answers: {tg.get(addr[role])}")
    check(tg.get(addr["ingest"], {}).get("command") == "ingest", "command from transfuse_build_info")
    b = tg.get(f"127.0.0.1:{reg['port']}", {})
    check(b.get("state") == "ok" and b.get("source") == "discover" and b.get("command") == "broker" and
          b.get("pid") == broker.pid, f"broker discovered: {b}")
    stale = [t for t in snap["targets"] if t.get("registration") == "ingest-gone-999999.json"]
    check(stale and stale[0]["state"] == "stale" and "is gone" in stale[0]["error"], f"dead PID is stale: {stale}")
    far = [t for t in snap["targets"] if t.get("registration") == "train-far-1.json"]
    check(far and far[0]["state"] == "stale", f"old silent registration from another host is stale: {far}")
    check(snap.get("discover", {}).get("bad_files") == 1, f"one bad file: {snap.get('discover')}")

    ing = [r for r in snap["ingest"] if r["target"] == addr["ingest"]]
    check(len(ing) == 2 and {r["worker"] for r in ing} == {"0", "1"}, f"two ingest workers: {ing}")
    for r in ing:
        check(r["rows_per_s"] > 0 and r["bytes_per_s"] > 0 and r["in_flight"] == 16, f"ingest rates: {r}")
        check(0.8 < r["success_rate"] < 1.0, f"success rate near 0.9: {r['success_rate']}")
        check(set(r["failures"]) == {"dns", "http_404"} and r["failures"]["dns"] > r["failures"]["http_404"],
              f"failure reasons: {r['failures']}")
        check(r["rows_planned"] == 100000 and r["eta_s"] is not None and r["eta_s"] > 0, f"ETA: {r}")
        check(r["fetch_seconds_mean"] is not None and abs(r["fetch_seconds_mean"] - 0.2) < 0.05, "fetch latency")
        check(len(r["history"]) == 2, "history has a point per round")
    esc = [r for r in snap["ingest"] if r["target"] == addr["escape"]]
    check(esc and "\x1b[2J" in esc[0]["worker"], "the JSON keeps the label as sent (escaped by JSON)")
    enc = [r for r in snap["encode"] if r["target"] == addr["encode"]]
    check(enc and enc[0]["images_per_s"] > 0 and enc[0]["images_total"] > 0, f"encode row: {enc}")
    tr = {r["rank"]: r for r in snap["trainer"]}
    check(set(tr) == {"0", "1", "2"}, f"three ranks: {list(tr)}")
    if len(tr) == 3:
        check(tr["2"]["behind_steps"] > 20 and tr["0"]["behind_steps"] < 20, "rank 2 is behind")
        check(tr["1"]["loss_nan"] and not tr["0"]["loss_nan"] and tr["1"]["loss_diffusion"] is None, "NaN loss")
        for r in tr.values():
            check(r["tokens_per_s"] > 0 and r["samples_per_s"] > 0 and r["grad_norm"] == 1.25 and
                  r["lr"] == 0.0003 and r["steps_planned"] == 10000 and r["data_position"] >= 0, f"rank row {r}")
    topics = {t["topic"]: t for t in snap["topics"]}
    s = topics.get("samples", {})
    check(s.get("bootstrap") == bs and s.get("mock") and len(s.get("partitions", [])) == 3 and
          s.get("high_total") == 90, f"topic watermarks from the cluster: {s}")
    gs = {x["group"]: x for x in s.get("groups", [])}
    g = gs.get("g1", {})
    check(g.get("lag") == 90 and g.get("committed_total") == 0,
          f"group with nothing committed lags by everything: {g}")
    check(gs.get("encoders", {}).get("lag") == 90, f"a group named by transfuse_kafka_consumer_info: {gs}")
    tot = snap["totals"]
    check(tot["ingest_rows_per_s"] > 0 and tot["train_tokens_per_s"] > 0 and tot["kafka_lag"] == 180 and
          tot["targets_failing"] >= 9, f"totals: {tot}")

    # a consumer commits: the lag is gone
    check(run("shards", "archive", f"kafka://{bs}/samples", "--out", os.path.join(WORK, "arch"), "--group",
              "g1").returncode == 0, "archive with a group")
    p, snap = once()
    g = [x for x in [t for t in snap["topics"] if t["topic"] == "samples"][0]["groups"] if x["group"] == "g1"][0]
    check(g["lag"] == 0 and g["committed_total"] == 90 and all(pp["committed"] >= 0 for pp in g["partitions"]),
          f"after commit: {g}")

    # --targets-file: one per line, comments and blanks skipped
    tf = os.path.join(WORK, "targets.txt")
    with open(tf, "w") as f:
        f.write(f"# the encoders\n{addr['encode']}\n\n  {addr['trainer0']}  # rank 0\n")
    p = run("top", "--once", "--json", "--targets-file", tf, "--interval", "0.3")
    check(p.returncode == 0 and sorted(t["target"] for t in json.loads(p.stdout)["targets"]) ==
          sorted([addr["encode"], addr["trainer0"]]), f"--targets-file: {p.stdout[:300]}")

    # plain --once: the same frame as text
    p = run("top", "--once", "--targets", addr["ingest"] + "," + addr["garbage"], "--interval", "0.5", ok=(1,))
    check("INGEST" in p.stdout and "bad metrics" in p.stdout and "\x1b" not in p.stdout, "plain --once output")

    # ---- --prometheus-sd: the target file Prometheus reads ----
    sd = os.path.join(WORK, "prom", "targets", "transfuse.json")
    os.makedirs(os.path.dirname(sd))
    run("top", "--once", "--discover", REG, "--prometheus-sd", sd, "--interval", "0.2", ok=(0, 1))
    groups = json.load(open(sd))
    check(len(groups) == 3, f"live, remote and stale registrations listed, the bad file left out: {groups}")
    mine = [x for x in groups if x["labels"]["command"] == "broker"]
    check(mine and mine[0]["targets"] == [f"127.0.0.1:{reg['port']}"] and
          mine[0]["labels"]["transfuse_pid"] == str(broker.pid), f"broker target: {groups}")
    promtool = shutil.which("promtool")
    if check(promtool, "promtool installed (scripts/install-deps.sh --test)"):
        cfg = os.path.join(WORK, "prom", "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("scrape_configs:\n  - job_name: transfuse\n    file_sd_configs:\n"
                    "      - files: ['targets/*.json']\n")
        q = subprocess.run([promtool, "check", "service-discovery", "--timeout=5s", cfg, "transfuse"],
                           capture_output=True, text=True)
        check(q.returncode == 0 and f"127.0.0.1:{reg['port']}" in q.stdout and "broker" in q.stdout,
              f"promtool reads the target file:\n{q.stdout}{q.stderr}")

    # ---- the live view in tmux ----
    if check(shutil.which("tmux"), "tmux installed"):
        rcfile = os.path.join(WORK, "top.rc")
        live_targets = ",".join(addr[r] for r in ("ingest", "encode", "trainer0", "trainer1", "trainer2",
                                                  "garbage", "escape"))
        cmd = (f"{T} top --targets {live_targets} --discover {REG} --group g1 --interval 0.5 --timeout 1 "
               f"2>{WORK}/top.err; echo $? > {rcfile}; sleep 60")
        subprocess.run(["tmux", "new-session", "-d", "-s", "top", "-x", "150", "-y", "45", cmd], env=TMUX_ENV,
                       check=True)

        def pane():
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", "top"], env=TMUX_ENV, capture_output=True,
                                  text=True).stdout

        def keys(*k):
            subprocess.run(["tmux", "send-keys", "-t", "top", *k], env=TMUX_ENV, check=True)

        def round_no(text):
            for w in text.splitlines()[0].split("  ") if text else []:
                if w.startswith("round "):
                    return int(w.split()[1])
            return None

        scr = wait_for(lambda: (lambda t: t if "TRAINER" in t and "KAFKA" in t and "g1" in t else None)(pane()))
        check(scr, "the live view shows the sections")
        scr = scr or pane()
        rows = scr.splitlines()
        check(rows and rows[0].startswith("transfuse top") and "sort: target" in rows[0], f"header: {rows[:1]}")
        check(any(addr["ingest"] in l and " 0 " in l for l in rows), "an ingest worker row")
        check(any(addr["garbage"] in l and "error" in l for l in rows) and "bad metrics" in scr, "an error row")
        check("?[2J?~" in scr, "escapes from an endpoint shown as text, cut to the column")
        check(all(len(l) <= 150 for l in rows), "lines fit the width")
        check("NaN" in scr, "a NaN loss is shown")
        keys("s")
        check(wait_for(lambda: "sort: rate" in pane()), "s: sort by rate")
        keys("s")
        check(wait_for(lambda: "sort: failures" in pane()), "s again: sort by failures")
        keys("p")
        check(wait_for(lambda: "PAUSED" in pane()), "p pauses")
        r1 = round_no(pane())
        time.sleep(2.0)
        r2 = round_no(pane())
        check(r1 is not None and r1 == r2, f"paused: the round stays ({r1} -> {r2})")
        keys("p")
        check(wait_for(lambda: "PAUSED" not in pane() and (round_no(pane()) or 0) > (r2 or 0)), "p resumes")
        subprocess.run(["tmux", "resize-window", "-t", "top", "-x", "70", "-y", "12"], env=TMUX_ENV)
        small = wait_for(lambda: (lambda t: t if all(len(l) <= 70 for l in t.splitlines()) and
                                  "more (a taller terminal" in t else None)(pane()))
        check(small, f"a smaller window is redrawn within its size:\n{pane()}")
        keys("q")
        check(wait_for(lambda: os.path.exists(rcfile) and open(rcfile).read().strip()), "q quits")
        check(os.path.exists(rcfile) and open(rcfile).read().strip() == "0", "q: exit 0")
        subprocess.run(["tmux", "kill-session", "-t", "top"], env=TMUX_ENV)

        # Ctrl-C: the stop flag, a restored terminal, exit 130
        os.unlink(rcfile)
        subprocess.run(["tmux", "new-session", "-d", "-s", "top", "-x", "120", "-y", "30", cmd], env=TMUX_ENV,
                       check=True)
        check(wait_for(lambda: "INGEST" in pane()), "the live view again")
        keys("C-c")
        check(wait_for(lambda: os.path.exists(rcfile) and open(rcfile).read().strip()), "Ctrl-C stops")
        check(os.path.exists(rcfile) and open(rcfile).read().strip() == "130", "Ctrl-C: exit 130")
        check("INGEST" not in pane(), "the alternate screen is gone after Ctrl-C")
        subprocess.run(["tmux", "kill-session", "-t", "top"], env=TMUX_ENV)

    # ---- in a pseudo-terminal: what the terminal receives ----
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm"
        os.execv(T, [T, "top", "--targets", addr["escape"] + "," + addr["ingest"], "--interval", "0.3"])
    import fcntl, struct, termios
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    out = b""
    end = time.time() + 30
    while time.time() < end and out.count(b"\x1b[H") < 6:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    os.write(fd, b"q")
    end = time.time() + 10
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    _, status = os.waitpid(pid, 0)
    check(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"pty: q exits 0 ({status})")
    check(out.startswith(b"\x1b[?1049h"), "enters the alternate screen")
    check(out.rstrip().endswith(b"\x1b[?1049l"), "leaves the alternate screen at exit")
    check(out.count(b"\x1b[2J") == 1, "the screen is cleared once, on entry, never per frame")
    check(out.count(b"\x1b[H") >= 6, "frames start at the cursor's home")
    check(b"?[2J?~" in out, "an endpoint's escape bytes reach the terminal only as text")

    # ---- a clean stop removes the registration ----
    broker.send_signal(signal.SIGTERM)
    check(broker.wait(timeout=20) == 0, "broker stops cleanly")
    check(not [f for f in os.listdir(REG) if f.startswith("broker-") and f.endswith(".json")],
          "registration removed on exit")
    p, snap = once()
    check(not [t for t in snap["targets"] if t.get("command") == "broker"], "gone from top once it exited")
finally:
    cleanup()

if failures:
    print(f"test_top: {failures} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("test_top: all checks passed")
