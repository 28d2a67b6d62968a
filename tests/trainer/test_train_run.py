#!/usr/bin/env python3
"""`transfuse train` end to end on the tiny Llama and datasets written by
test_train_data's `make` mode (bf16 latents with log-variance, so the
posterior sampling is in the loop):

(a) resume is bit-exact: a run of N steps without interruption; the same
    run stopped by SIGINT at a step (exit 130, a checkpoint of that step),
    then --resume to N; and one killed by SIGKILL at a random step after
    its first checkpoint, then --resume. Every step's losses, grad norm,
    lr and data position in the JSON log, the held-out losses, and the
    final weights and optimizer state equal the uninterrupted run's to
    the bit. The uninterrupted run takes its options from --config, the
    others from flags. The resume ignores a newer step folder without its
    marker and removes a dead writer's temporary folder. keep-last / keep-every leave the right folders.
(b) data with another tokenizer (a resumed run; --tokenizer FILE), VAE
    (a resumed run) or latent shape is refused (exit 3), the message naming both.
(c) bad flags and configs exit 2 before any work (no --out folder made),
    as does an --out holding checkpoints without --resume.
(d) --log writes NaN and infinities as null (a learning rate of 1e30).
(e) from a Kafka topic (the embedded broker, one partition so the order
    is fixed): a SIGTERM + --resume run equals the uninterrupted one; a
    topic, which records no latent scaling, needs --latent-scale.

usage: test_train_run.py TRANSFUSE TEST_TRAIN_DATA LLAMA_DIR WORKDIR"""
import base64, json, os, random, shutil, signal, subprocess, sys, time, urllib.request

T, MAKE, LLAMA, WORK = sys.argv[1:5]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import Checks, wait_process

checks = Checks("test_train_run")
check = checks.check
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
W = lambda *p: os.path.join(WORK, *p)


def run(*argv, ok=(0,)):
    p = subprocess.run([T, *argv], capture_output=True, timeout=600)
    if p.returncode not in ok:
        print(f"exit {p.returncode} from {argv}:\n{p.stderr.decode()}", file=sys.stderr)
    return p


def make(name, n, *opts):
    subprocess.run([MAKE, "make", W(name), str(n), *opts], check=True)


def strict_json(line):
    def refuse(c):
        raise ValueError(f"{c} in the log")
    return json.loads(line, parse_constant=refuse)


def read_log(path):
    """{step: the line without its timing fields}."""
    out = {}
    with open(path) as f:
        for line in f:
            j = strict_json(line)
            for k in ("tokens_per_s", "samples_per_s"):
                j.pop(k, None)
            out[j["step"]] = j
    return out


make("ds", 40, "--latent", "4,8,8", "--dtype", "bf16", "--logvar", "--shard-records", "6")
make("val", 6, "--latent", "4,8,8", "--dtype", "f16")
N = 24
common = ["--llama", LLAMA, "--data", W("ds"), "--threads", "1"]
opts = {"steps": N, "batch": 2, "seq": 96, "accum": 2, "lr-image": 2e-3, "warmup": 3, "lr-floor": 1e-4,
        "checkpoint-every": 4, "keep-last": 2, "keep-every": 8, "val": W("val"), "val-every": 5, "seed": 7}
flags = []
for k, v in opts.items():
    flags += [f"--{k}", str(v)]
with open(W("config.json"), "w") as f:
    json.dump(opts, f)

# ---- (a) the uninterrupted run -------------------------------------------------------------------
p = run("train", *common, "--config", W("config.json"), "--out", W("a"), "--log", W("a.log"))
check(p.returncode == 0, "uninterrupted run exit 0")
A = read_log(W("a.log"))
check(sorted(A) == list(range(0, N + 1)), f"a log line per step 0..{N}: {sorted(A)}")
check(all(A[s].get("loss_lm") is not None and A[s].get("loss_diffusion") is not None for s in range(1, N + 1)),
      "losses in every step's line")
check(all(("val_loss_diffusion" in A[s]) == (s % 5 == 0 or s == N) for s in A),
      "held-out losses every 5 steps, at 0 and at the last")
check(A[N]["val_loss_diffusion"] < A[0]["val_loss_diffusion"],
      f"held-out diffusion loss falls: {A[0]['val_loss_diffusion']} -> {A[N]['val_loss_diffusion']}")
kept = sorted(d for d in os.listdir(W("a")) if d.startswith("step-"))
check(kept == ["step-00000008", "step-00000016", "step-00000020", "step-00000024"],
      f"keep-last 2 + keep-every 8: {kept}")
for d in kept:
    check(sorted(os.listdir(W("a", d))) ==
          ["COMPLETE", "config.json", "model.safetensors", "optimizer.safetensors", "state.json"], f"{d} files")
st = json.load(open(W("a", "step-00000024", "state.json")))
check(st["step"] == N and st["data"]["position"]["kind"] == "dataset" and st["facts"]["tokenizer_id"] == "tok-test",
      "state.json: step, data position, facts")


def same_as_a(log, what):
    B = read_log(log)
    check(sorted(B) == sorted(A), f"{what}: steps {sorted(B)}")
    diff = [s for s in A if B.get(s) != A[s]]
    check(not diff, f"{what}: lines differ at steps {diff[:5]}" +
          (f"\n  a: {A[diff[0]]}\n  b: {B.get(diff[0])}" if diff else ""))


def same_files(out, what):
    for f in ("model.safetensors", "optimizer.safetensors"):
        with open(W("a", "step-%08d" % N, f), "rb") as x, open(W(out, "step-%08d" % N, f), "rb") as y:
            check(x.read() == y.read(), f"{what}: final {f} equal to the bit")


def start(out, log, *extra):
    return subprocess.Popen([T, "train", *common, *flags, "--out", W(out), "--log", W(log), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def last_step(log):
    try:
        with open(log) as f:
            lines = [l for l in f.read().split("\n") if l]
        return json.loads(lines[-1])["step"] if lines else -1
    except (OSError, ValueError):
        return -1


def wait_for(proc, cond):
    """Polls until cond() or the process ended; returns cond()."""
    while proc.poll() is None and not cond():
        time.sleep(0.005)
    return cond()


# ---- SIGINT at a step boundary, then --resume (metrics served and registered meanwhile) ----
proc = start("b", "b.log", "--register", W("reg"))
reached = wait_for(proc, lambda: last_step(W("b.log")) >= 3)
regs = [json.load(open(W("reg", n))) for n in os.listdir(W("reg")) if n.endswith(".json")]
check(len(regs) == 1 and regs[0].get("command") == "train", f"registered while running: {regs}")
metrics = ""
if regs:
    with urllib.request.urlopen(f"http://127.0.0.1:{regs[0]['port']}/metrics", timeout=10) as r:
        metrics = r.read().decode()
for series in ("transfuse_train_step{rank=\"0\"}", "transfuse_train_steps_planned{rank=\"0\"} 24",
               "transfuse_train_loss_diffusion{", "transfuse_train_tokens_total{", "transfuse_train_lr{"):
    check(series in metrics, f"/metrics has {series}")
reached = reached and wait_for(proc, lambda: last_step(W("b.log")) >= 6)
proc.send_signal(signal.SIGINT)
waited, err = wait_process(proc, 300)
check(reached and proc.returncode == 130, f"SIGINT: exit {proc.returncode} (130 expected): {err.decode()[-300:]}")
stopped = last_step(W("b.log"))
check(os.path.exists(W("b", "step-%08d" % stopped, "COMPLETE")), f"a checkpoint of the stop step {stopped}")
check(stopped < N, f"stopped before the end (step {stopped})")
check(not [n for n in os.listdir(W("reg")) if n.endswith(".json")], "registration removed at the stop")
p = run("train", *common, *flags, "--out", W("b"), "--log", W("b.log"), "--resume")
check(p.returncode == 0, "resume after SIGINT exit 0")
check(b"resuming from" in p.stderr, "the resumed run says so")
same_as_a(W("b.log"), f"SIGINT at step {stopped} + resume")
same_files("b", "SIGINT + resume")

# ---- SIGKILL at a random step after the first checkpoint, then --resume ----
seed = int(os.environ.get("TEST_SEED", time.time_ns() % 1000000))
kill_at = random.Random(seed).randint(5, N - 2)
print(f"SIGKILL at step {kill_at} (TEST_SEED={seed})")
proc = start("c", "c.log")
reached = wait_for(proc, lambda: last_step(W("c.log")) >= kill_at)
proc.kill()
proc.wait()
check(reached and proc.returncode == -signal.SIGKILL, f"killed (rc {proc.returncode})")
killed = last_step(W("c.log"))
complete = sorted(d for d in os.listdir(W("c")) if os.path.exists(W("c", d, "COMPLETE")))
check(complete and complete[-1] < "step-%08d" % N, f"complete checkpoints before the end: {complete}")
# an incomplete checkpoint (no marker) newer than all, and a dead writer's temporary folder
os.makedirs(W("c", "step-%08d" % (N - 1)))
open(W("c", "step-%08d" % (N - 1), "model.safetensors"), "w").write("not a checkpoint")
os.makedirs(W("c", ".tmp-step-%08d-999999" % (N - 1)))
p = run("train", *common, *flags, "--out", W("c"), "--log", W("c.log"), "--resume")
check(p.returncode == 0, "resume after SIGKILL exit 0 (the incomplete folder ignored)")
check(f"resuming from {W('c', complete[-1] if complete else '?')}".encode() in p.stderr,
      "resumed from the newest complete checkpoint")
same_as_a(W("c.log"), f"SIGKILL at step {killed} (newest checkpoint {complete[-1] if complete else None}) + resume")
same_files("c", "SIGKILL + resume")
check(not [d for d in os.listdir(W("c")) if d.startswith(".tmp")], "no temporary folders left")
left = sorted(d for d in os.listdir(W("c")) if d.startswith("step-"))
check(left == sorted(kept + ["step-%08d" % (N - 1)]), f"the same checkpoints kept, the foreign folder left alone: {left}")

# ---- (b) refusals -----------------------------------------------------------------------------
make("other_tok", 5, "--latent", "4,8,8", "--tokenizer-id", "tok-zzz")
p = run("train", "--out", W("a"), "--resume", "--data", W("other_tok"), "--steps", str(N + 2), "--threads", "1",
        ok=(3,))
e = p.stderr.decode()
check(p.returncode == 3 and "tok-test" in e and "tok-zzz" in e, f"resumed run refuses another tokenizer: {e}")
make("other_vae", 5, "--latent", "4,8,8", "--vae-id", "vae-zzz")
p = run("train", "--out", W("a"), "--resume", "--data", W("other_vae"), "--steps", str(N + 2), "--threads", "1",
        ok=(3,))
e = p.stderr.decode()
check(p.returncode == 3 and "vae-test" in e and "vae-zzz" in e, f"resumed run refuses another VAE: {e}")
p = run("train", *common, "--out", W("r1"), "--latent", "4,16,16", "--steps", "1", ok=(3,))
e = p.stderr.decode()
check(p.returncode == 3 and "4x16x16" in e and "4x8x8" in e, f"another latent shape refused: {e}")
tok = W("bytes.tiktoken")
with open(tok, "w") as f:
    for b in range(256):
        f.write(f"{base64.b64encode(bytes([b])).decode()} {b}\n")
p = run("train", *common, "--out", W("r2"), "--tokenizer", tok, "--steps", "1", ok=(3,))
e = p.stderr.decode()
check(p.returncode == 3 and "tokenizer differs" in e and "tok-test" in e, f"--tokenizer refuses other data: {e}")

# ---- (c) bad flags: exit 2, nothing done --------------------------------------------------------
bad_cfg = W("bad.json")
with open(bad_cfg, "w") as f:
    json.dump({"batch": 2, "no-such-option": 1}, f)
for argv in (["--batch", "0"], ["--bogus"], ["--lr-image", "abc"], ["--latent", "4,8"], ["--adapter", "conv"],
             ["--config", bad_cfg], ["--seq", "x"], ["extra-operand"], ["--seq", "19"], ["--patch", "3"]):
    p = run("train", *common, "--out", W("bad"), *argv, ok=(2,))
    check(p.returncode == 2 and not os.path.exists(W("bad")), f"{argv}: exit {p.returncode}, no output")
p = run("train", "--data", W("ds"), "--out", W("bad"), ok=(2,))
check(p.returncode == 2 and b"--llama" in p.stderr, "--llama required")
p = run("train", *common, *flags, "--out", W("a"), ok=(2,))
check(p.returncode == 2 and b"--resume" in p.stderr, "an --out with checkpoints needs --resume")
p = run("train", "--help")
check(p.returncode == 0 and b"--checkpoint-every" in p.stdout and b"--val-every" in p.stdout, "--help")

# ---- (d) NaN and infinities as null -----------------------------------------------------------
p = run("train", *common, "--out", W("nan"), "--log", W("nan.log"), "--steps", "3", "--seq", "96", "--warmup", "0",
        "--lr-image", "1e30", "--clip", "0")
check(p.returncode == 0, "a diverging run still runs")
try:
    L = read_log(W("nan.log"))
    check(any(L[s]["loss"] is None for s in L), f"null losses in the log: {[L[s]['loss'] for s in L]}")
except ValueError as x:
    check(False, f"the log is not strict JSON: {x}")

# ---- a text learning rate: the text path trains, and the run says so ----
p = run("train", *common, "--out", W("text"), "--log", W("text.log"), "--steps", "2", "--seq", "96", "--adapter",
        "linear", "--lr-text", "1e-4", "--warmup", "1")
L = read_log(W("text.log")) if p.returncode == 0 else {}
check(p.returncode == 0 and b"no longer frozen" in p.stderr and L.get(2, {}).get("lr_text", 0) > 0,
      f"--lr-text: the warning and lr_text in the log ({p.returncode})")
with open(W("text", "step-00000002", "model.safetensors"), "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    names = json.loads(f.read(n))
check("model.layers.0.self_attn.q_proj.weight" in names and "model.norm.weight" in names,
      "the text copy is saved with the trainable tensors")

# ---- (e) a Kafka topic (the embedded broker): resume is bit-exact there too ----------------------
broker = subprocess.Popen([T, "broker", "--brokers", "1", "--topic", "samples:1", "--bootstrap-file", W("bs")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
try:
    for _ in range(600):
        if os.path.exists(W("bs")) and os.path.getsize(W("bs")) > 0 or broker.poll() is not None:
            break
        time.sleep(0.05)
    url = f"kafka://{open(W('bs')).read().strip()}/samples"
    make("kds", 120, "--latent", "4,8,8", "--dtype", "bf16", "--logvar")
    p = run("shards", "publish", W("kds"), "--to", url, "--flow-group", "trainer")
    check(p.returncode == 0, "publish to the topic")
    kargs = ["--llama", LLAMA, "--data", url, "--threads", "1", "--steps", "8", "--batch", "2", "--seq", "96",
             "--checkpoint-every", "3", "--lr-image", "2e-3", "--warmup", "2", "--latent", "4,8,8"]
    scale = ["--latent-scale", "0.18215", "--latent-shift", "0.125"]
    p = run("train", *kargs, "--out", W("kn"), "--kafka-group", "kn", "--steps", "1", ok=(3,))
    check(p.returncode == 3 and b"no latent scaling factor" in p.stderr, f"a topic needs the scaling: {p.stderr[-200:]}")
    p = run("train", *kargs, *scale, "--out", W("ka"), "--kafka-group", "ka", "--log", W("ka.log"))
    check(p.returncode == 0, "topic: uninterrupted run exit 0")
    KA = read_log(W("ka.log"))
    check(sorted(KA) == list(range(1, 9)) and KA[8]["data_position"]["kind"] == "kafka",
          f"topic: 8 steps, a Kafka position: {KA.get(8, {}).get('data_position')}")
    proc = subprocess.Popen([T, "train", *kargs, *scale, "--out", W("kb"), "--kafka-group", "kb", "--log", W("kb.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    reached = wait_for(proc, lambda: last_step(W("kb.log")) >= 4)
    proc.send_signal(signal.SIGTERM)
    wait_process(proc, 300)
    check(reached and proc.returncode == 130, f"topic: SIGTERM exit {proc.returncode}")
    p = run("train", "--out", W("kb"), "--resume", "--log", W("kb.log"), "--threads", "1")
    check(p.returncode == 0, "topic: resume exit 0")
    KB = read_log(W("kb.log"))
    check(KB == KA, f"topic: SIGTERM at {last_step(W('kb.log'))} + resume equals the uninterrupted run: "
          f"{[s for s in KA if KB.get(s) != KA[s]]}")
finally:
    broker.terminate()
    wait_process(broker, 60)

checks.finish()
