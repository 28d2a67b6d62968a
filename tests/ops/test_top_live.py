#!/usr/bin/env python3
"""`transfuse top` against the real thing, as an operator would watch it: a
running `transfuse train` (the tiny config on records ingested from the
wallpaper photos) and a running `transfuse ingest run` fetching from the
fault server's slow path, both registered in one discovery folder.

  - `--once --json --discover DIR`: a trainer row whose step, losses, lr,
    grad norm and tokens/s are the ones the trainer's own --log reports,
    and an ingest row with a rate, transfers in flight and the rows planned;
  - the live view in tmux (send-keys, capture-pane): the TRAIN and INGEST
    sections appear, the step shown grows from frame to frame, p pauses
    (the step shown stops while the trainer goes on), q quits with 0;
  - the trainer stopped with SIGINT exits 130 and its registration is gone.

usage: test_top_live.py TRANSFUSE TOKENIZER WORKDIR"""
import json, os, re, shutil, signal, socket, subprocess, sys, time

T, TOK, WORK = sys.argv[1], sys.argv[2], os.path.abspath(sys.argv[3])
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "ingest", "fetch"))
sys.path.insert(0, os.path.join(HERE, ".."))
from servers import FaultServer, free_port  # noqa: E402
from checks import Checks, wait_for  # noqa: E402

procs = []
TMUX_ENV = dict(os.environ, TMUX_TMPDIR=os.path.join(WORK, "tmux"), TERM="xterm-256color")
C = Checks("test_top_live")
check = C.check


def run(*argv, ok=(0,), **kw):
    p = subprocess.run([T, *argv], capture_output=True, text=True, **kw)
    if p.returncode not in ok:
        print(f"exit {p.returncode} from {argv}:\n{p.stderr}", file=sys.stderr)
    return p


def photos(n):
    found = []
    for root, _, files in os.walk("/usr/share/backgrounds"):
        for f in sorted(files):
            if f.lower().endswith((".jpg", ".jpeg", ".png", ".webp")):
                found.append(os.path.join(root, f))
    return sorted(found)[:n]


def log_lines(path):
    rows = []
    if os.path.exists(path):
        for line in open(path):
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass  # a line being written
    return rows


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(os.path.join(WORK, "tmux"))
    reg = os.path.join(WORK, "registry")
    pics = photos(8)
    if not check(len(pics) >= 4, "wallpaper photos installed (scripts/install-deps.sh --test)"):
        return
    check(run("vae", "init", "--layout", "tiny", "--seed", "1", "--out", os.path.join(WORK, "vae")).returncode == 0,
          "vae init")
    check(run("llama", "init", "--layout", "tiny", "--seed", "1", "--out", os.path.join(WORK, "llama"))
          .returncode == 0, "llama init")
    manifest = os.path.join(WORK, "local.tsv")
    with open(manifest, "w") as f:
        f.write("url\tcaption\n")
        for i, p in enumerate(pics):
            f.write(f"{p}\tA wallpaper, number {i}\n")
    ds = os.path.join(WORK, "ds")
    check(run("ingest", "--manifest", manifest, "--out", ds, "--tokenizer", TOK, "--vae",
              os.path.join(WORK, "vae")).returncode == 0, "local ingest for the training data")

    # ---- the trainer: many steps, registered ----
    tlog = os.path.join(WORK, "train.jsonl")
    tport = free_port()
    train = subprocess.Popen([T, "train", "--llama", os.path.join(WORK, "llama"), "--data", ds, "--out",
                              os.path.join(WORK, "run"), "--steps", "100000", "--warmup", "10", "--seq", "512",
                              "--threads", "1", "--log", tlog, "--checkpoint-every", "0",
                              "--metrics-port", str(tport), "--register", reg],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, "train.err"), "w"))
    procs.append(train)
    check(wait_for(lambda: len(log_lines(tlog)) >= 3, timeout=60), "the trainer logs steps")

    # ---- the ingest: slow rows from the fault server, registered ----
    corpus = os.path.join(WORK, "corpus")
    os.makedirs(corpus)
    names = []
    for i, p in enumerate(pics):
        name = f"p{i}{os.path.splitext(p)[1].lower()}"
        shutil.copy(p, os.path.join(corpus, name))
        names.append(name)
    fs = FaultServer(corpus).__enter__()
    procs.append(fs.proc)
    web = os.path.join(WORK, "web.tsv")
    with open(web, "w") as f:
        f.write("url\tcaption\n")
        for i in range(400):
            f.write(f"http://127.0.0.1:{fs.port}/slow/{names[i % len(names)]}?s=1\tslow photo {i}\n")
    iport = free_port()
    ingest = subprocess.Popen([T, "ingest", "run", "--manifest", web, "--out", os.path.join(WORK, "web-ds"),
                               "--tokenizer", TOK, "--vae", os.path.join(WORK, "vae"), "--workers", "1",
                               "--allow-private-networks", "--metrics-port", str(iport), "--register", reg],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, "ingest.err"), "w"))
    procs.append(ingest)
    check(wait_for(lambda: len([f for f in os.listdir(reg) if f.endswith(".json")]) >= 2 if os.path.isdir(reg)
                   else False), "both processes registered")

    # ---- --once --json ----
    def snap():
        p = run("top", "--once", "--json", "--discover", reg, "--interval", "1", "--timeout", "2", ok=(0, 1))
        return json.loads(p.stdout) if p.stdout.strip() else {}

    s = wait_for(lambda: (lambda x: x if x.get("ingest") and (x["ingest"][0].get("rows_per_s") or 0) > 0 and
                          x.get("trainer") else None)(snap()), timeout=60, step=0.5)
    if check(s, "top --once --json shows an ingest row with a rate and a trainer row"):
        tr = s["trainer"][0]
        logged = {r["step"]: r for r in log_lines(tlog)}
        row = logged.get(tr["step"])
        check(row is not None, f"the step top shows ({tr['step']}) is one the trainer logged")
        if row:
            for k_top, k_log in (("loss_lm", "loss_lm"), ("loss_diffusion", "loss_diffusion"), ("lr", "lr"),
                                 ("grad_norm", "grad_norm")):
                a, b = tr.get(k_top), row.get(k_log)
                check(a is not None and b is not None and abs(a - b) <= 1e-6 * max(1.0, abs(b)),
                      f"top's {k_top} {a} is the logged {b}")
        check((tr.get("tokens_per_s") or 0) > 0 and (tr.get("samples_per_s") or 0) > 0, f"trainer rates: {tr}")
        check(tr.get("steps_planned") == 100000, f"steps planned: {tr.get('steps_planned')}")
        ing = s["ingest"][0]
        check((ing.get("in_flight") or 0) > 0, f"transfers in flight: {ing}")
        check(ing.get("rows_planned") == 400, f"rows planned: {ing.get('rows_planned')}")
        commands = sorted(t.get("command") for t in s["targets"] if t.get("state") == "ok")
        check(commands == ["ingest", "train"], f"discovered commands: {commands}")

    # ---- the live view in tmux ----
    if check(shutil.which("tmux"), "tmux installed"):
        rc_file = os.path.join(WORK, "top.rc")
        cmd = f"{T} top --discover {reg} --interval 0.5 --timeout 1 2>{WORK}/top.err; echo $? > {rc_file}; sleep 60"
        subprocess.run(["tmux", "new-session", "-d", "-s", "live", "-x", "160", "-y", "40", cmd], env=TMUX_ENV,
                       check=True)

        def pane():
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", "live"], env=TMUX_ENV, capture_output=True,
                                  text=True).stdout

        def keys(*k):
            subprocess.run(["tmux", "send-keys", "-t", "live", *k], env=TMUX_ENV, check=True)

        def shown_step(text):
            # the trainer row's STEP/PLANNED column, e.g. "412/100k" or "1.2k/100k"
            for line in text.splitlines():
                for tok in line.split():
                    m = re.match(r"^([0-9.]+)([kMG]?)/([0-9.]+)([kMG]?)$", tok)
                    if m and m.group(3) + m.group(4) == "100k":
                        return float(m.group(1)) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}[m.group(2)]
            return None

        first = wait_for(lambda: shown_step(pane()), timeout=30)
        text = pane()
        check(first is not None and "TRAIN" in text.upper() and "INGEST" in text.upper(),
              f"the live view shows the trainer and the ingest:\n{text}")
        later = wait_for(lambda: (lambda v: v if v is not None and first is not None and v > first else None)(
            shown_step(pane())), timeout=30)
        check(later is not None, f"the step shown grows ({first} -> {later})")
        keys("p")
        time.sleep(1.5)
        paused = shown_step(pane())
        steps_then = len(log_lines(tlog))
        time.sleep(2.5)
        check(shown_step(pane()) == paused and len(log_lines(tlog)) > steps_then,
              "p pauses the view while the trainer goes on")
        keys("p")
        check(wait_for(lambda: (lambda v: v is not None and paused is not None and v > paused)(shown_step(pane())),
                       timeout=30), "p again resumes")
        keys("q")
        check(wait_for(lambda: os.path.exists(rc_file) and open(rc_file).read().strip() != ""), "q quits")
        if os.path.exists(rc_file):
            check(open(rc_file).read().strip() == "0", f"q exits 0 (got {open(rc_file).read().strip()})")
        subprocess.run(["tmux", "kill-server"], env=TMUX_ENV, capture_output=True)

    # ---- stopping: 130 and the registration gone ----
    train.send_signal(signal.SIGINT)
    try:
        rc = train.wait(120)
    except subprocess.TimeoutExpired:
        rc = None
    check(rc == 130, f"the trainer stopped by SIGINT exits 130 (got {rc})")
    ingest.send_signal(signal.SIGINT)
    try:
        irc = ingest.wait(120)
    except subprocess.TimeoutExpired:
        irc = None
    check(irc == 130, f"the ingest stopped by SIGINT exits 130 (got {irc})")
    left = [f for f in os.listdir(reg) if f.endswith(".json")]
    check(left == [], f"registrations removed on exit: {left}")
    fs.__exit__(None, None, None)


try:
    main()
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    subprocess.run(["tmux", "kill-server"], env=TMUX_ENV, capture_output=True)
C.finish()
