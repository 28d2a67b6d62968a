#!/usr/bin/env python3
"""End to end: the shipped monitoring stack on loopback, with real
processes and injected faults, judged by Prometheus' own HTTP API.

Debian's prometheus runs ops/prometheus/prometheus.yml and
transfuse.rules.yml (copied, with the intervals and `for:` durations cut to
seconds so the test takes a minute, not an hour; expressions unchanged but
for range windows). `transfuse broker --register DIR` is discovered through
the file_sd target file that `transfuse top --headless --prometheus-sd`
keeps, and top itself is scraped as the Kafka lag exporter.

Faults: records keep arriving on a topic whose consumer group commits
nothing (TransfuseConsumerLagGrowing must fire for that group and topic),
then the broker is killed with SIGKILL, leaving its registration behind
(TransfuseTargetDown must fire for it). When the ingest and trainer
commands export their metrics, their faults join here.

usage: test_prometheus_e2e.py TRANSFUSE PROMETHEUS OPS_PROMETHEUS_DIR WORKDIR"""
import json, os, re, shutil, signal, socket, subprocess, sys, time, urllib.request

T, PROM, SRC, WORK = sys.argv[1:5]
failures = 0
procs = []


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what, file=sys.stderr)
    return cond


def wait_for(pred, timeout, step=0.5):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(argv, name):
    p = subprocess.Popen(argv, stdout=open(os.path.join(WORK, name + ".out"), "w"),
                         stderr=open(os.path.join(WORK, name + ".err"), "w"))
    procs.append(p)
    return p


shutil.rmtree(WORK, ignore_errors=True)
cfg_dir = os.path.join(WORK, "prom")
os.makedirs(os.path.join(cfg_dir, "targets"))
REG = os.path.join(WORK, "reg")
top_port, prom_port = free_port(), free_port()
api = f"http://127.0.0.1:{prom_port}/api/v1"


def get(path):
    try:
        with urllib.request.urlopen(api + path, timeout=5) as r:
            return json.load(r)
    except Exception:
        return None


# The shipped config and rules, faster: seconds instead of minutes.
cfg = open(os.path.join(SRC, "prometheus.yml")).read()
cfg = cfg.replace("scrape_interval: 15s", "scrape_interval: 1s").replace("evaluation_interval: 15s",
                                                                          "evaluation_interval: 1s")
cfg = cfg.replace("refresh_interval: 30s", "refresh_interval: 1s").replace("127.0.0.1:9464", f"127.0.0.1:{top_port}")
check("scrape_interval: 1s" in cfg and f"127.0.0.1:{top_port}" in cfg, "config edits applied")
open(os.path.join(cfg_dir, "prometheus.yml"), "w").write(cfg)
rules = open(os.path.join(SRC, "transfuse.rules.yml")).read()
rules = re.sub(r"for: \d+m", "for: 3s", rules)
rules = rules.replace("deriv(transfuse_kafka_group_lag[10m])", "deriv(transfuse_kafka_group_lag[20s])")
check("for: 3s" in rules and "[20s]" in rules, "rule edits applied")
open(os.path.join(cfg_dir, "transfuse.rules.yml"), "w").write(rules)

try:
    bs_file = os.path.join(WORK, "bs")
    broker = start([T, "broker", "--topic", "samples:2", "--register", REG, "--bootstrap-file", bs_file], "broker")
    if not wait_for(lambda: os.path.exists(bs_file), 20):
        raise SystemExit("broker did not start")
    bs = open(bs_file).read().strip()
    start([T, "top", "--headless", "--discover", REG, "--prometheus-sd",
           os.path.join(cfg_dir, "targets", "transfuse.json"), "--metrics-port", str(top_port), "--group", "g1",
           "--interval", "1"], "top")
    start([PROM, f"--config.file={cfg_dir}/prometheus.yml", f"--storage.tsdb.path={WORK}/data",
           f"--web.listen-address=127.0.0.1:{prom_port}"], "prometheus")

    def targets_up():
        t = get("/targets")
        if not t:
            return None
        act = t["data"]["activeTargets"]
        up = {x["labels"].get("command"): x["health"] for x in act}
        return up if up.get("broker") == "up" and up.get("top") == "up" else None

    up = wait_for(targets_up, 60)
    check(up, f"prometheus scrapes the registered broker and top: {get('/targets')}")

    def query(q):
        r = get("/query?query=" + urllib.request.quote(q))
        return r["data"]["result"] if r and r.get("status") == "success" else []

    info = wait_for(lambda: query("transfuse_broker_info"), 30)
    check(info and info[0]["metric"].get("bootstrap") == bs, f"broker series in prometheus: {info}")

    # Fault 1: records keep coming, group g1 commits nothing.
    ds = os.path.join(WORK, "ds")
    lines = "".join(json.dumps({"key": f"k{i:04d}", "caption": "c"}) + "\n" for i in range(700))
    subprocess.run([T, "shards", "import", "--out", ds], input=lines, text=True, capture_output=True, check=True)

    def alert(name, **labels):
        a = get("/alerts")
        for x in (a or {}).get("data", {}).get("alerts", []):
            if x["labels"].get("alertname") == name and x["state"] == "firing" and \
                    all(x["labels"].get(k) == v for k, v in labels.items()):
                return x
        return None

    fired = None
    end = time.time() + 120
    while time.time() < end and not fired:
        subprocess.run([T, "shards", "publish", ds, "--to", f"kafka://{bs}/samples", "--force"],
                       capture_output=True)
        fired = wait_for(lambda: alert("TransfuseConsumerLagGrowing", group="g1", topic="samples"), 3)
    check(fired, "TransfuseConsumerLagGrowing fires for group g1 on samples")
    if fired:
        check(fired["labels"].get("severity") == "warning" and "falls behind on samples" in
              fired["annotations"].get("summary", ""), f"alert labels and summary: {fired}")
    lag = query('transfuse_kafka_group_lag{group="g1"}')
    check(lag and float(lag[0]["value"][1]) >= 1400, f"the lag top exports: {lag}")

    # Fault 2: the broker crashes and leaves its registration behind.
    broker_target = [x for x in get("/targets")["data"]["activeTargets"] if x["labels"].get("command") == "broker"]
    broker.send_signal(signal.SIGKILL)
    broker.wait()
    check([f for f in os.listdir(REG) if f.startswith("broker-")], "a killed broker leaves its file")
    down = wait_for(lambda: alert("TransfuseTargetDown", command="broker"), 60)
    check(down, "TransfuseTargetDown fires for the killed broker")
    if down and broker_target:
        check(down["labels"]["instance"] == broker_target[0]["labels"]["instance"], "for its instance")
finally:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

if failures:
    for name in ("top", "prometheus"):
        path = os.path.join(WORK, name + ".err")
        if os.path.exists(path):
            print(f"--- {name} stderr (tail)\n" + "".join(open(path).readlines()[-15:]), file=sys.stderr)
    print(f"test_prometheus_e2e: {failures} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("test_prometheus_e2e: all checks passed")
