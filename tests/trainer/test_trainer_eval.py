"""test_trainer_eval.py TRANSFUSE TEST_TRAINER_MODEL WORKDIR

`transfuse eval text`: per-line mean next-token loss of the text path.
A byte-level tiktoken tokenizer.model (256 byte tokens, rank = byte, so
BOS = 256) keeps the ids predictable; the twin (fusion_twin.py) computes
the same losses in float64 (within 1e-5 relative). With --checkpoint (a
folder holding trained, here perturbed, image weights written by the C
model) the output must be identical to the byte. Usage errors exit 2
before any work; a missing checkpoint exits 3. Also `transfuse llama
init|info`: the 1b and 8b configs (config only by default), parameter
counts, usage errors.
"""
import base64
import json
import math
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from checks import Checks  # noqa: E402
from fusion_twin import Twin  # noqa: E402

LINES = ["Hello, world.", "", "a photo of a cat on a red sofa", "Grüße aus Köln: 3 × 4 = 12", "x"]


def main():
    transfuse, dumper, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    c = Checks("trainer_eval")
    tok = os.path.join(work, "tokenizer.model")
    with open(tok, "w") as f:
        for b in range(256):
            f.write(f"{base64.b64encode(bytes([b])).decode()} {b}\n")
    llama = os.path.join(work, "llama")
    subprocess.run([transfuse, "llama", "init", "--layout", "tiny", "--seed", "9", "--init-std", "0.25", "--out",
                    llama], check=True, capture_output=True)
    # trained image weights: the C model's perturbed trainable tensors, as a checkpoint folder
    subprocess.run([dumper, "dump", llama, "unet", os.path.join(work, "dump")], check=True, capture_output=True)
    ckpt = os.path.join(work, "ckpt")
    os.makedirs(ckpt)
    shutil.copy(os.path.join(work, "dump", "trainable.safetensors"), os.path.join(ckpt, "model.safetensors"))

    stdin = "".join(line + "\n" for line in LINES)
    base = [transfuse, "eval", "text", "--llama", llama, "--tokenizer", tok, "--threads", "2"]
    r0 = subprocess.run(base, input=stdin, capture_output=True, text=True)
    r1 = subprocess.run(base + ["--checkpoint", ckpt], input=stdin, capture_output=True, text=True)
    c.check(r0.returncode == 0, f"eval text exit {r0.returncode}: {r0.stderr}")
    c.check(r1.returncode == 0, f"eval text --checkpoint exit {r1.returncode}: {r1.stderr}")
    out = r0.stdout.splitlines()
    c.check(len(out) == len(LINES), f"{len(out)} lines for {len(LINES)}")
    c.check(r0.stdout == r1.stdout and r0.stdout != "", "the trained checkpoint changed the text path:\n"
            f"{r0.stdout}\nvs\n{r1.stdout}")
    twin = Twin(llama, os.path.join(ckpt, "model.safetensors"))
    for line, got in zip(LINES, out):
        ids = [256] + list(line.encode())
        if len(ids) < 2:
            c.check(got == "nan", f"{line!r}: {got}, expected nan")
            continue
        want = twin.text_loss(ids)
        rel = abs(float(got) - want) / want
        print(f"{line!r}: C {got} twin {want:.9g} rel {rel:.2e}")
        c.check(rel <= 1e-5, f"{line!r}: C {got} twin {want} rel {rel}")
        c.check(not math.isnan(float(got)), f"{line!r}: nan")

    bad = subprocess.run(base + ["--bogus"], input="", capture_output=True, text=True)
    c.check(bad.returncode == 2 and "bogus" in bad.stderr, f"unknown flag: exit {bad.returncode} {bad.stderr}")
    miss = subprocess.run([transfuse, "eval", "text", "--llama", llama], input="", capture_output=True, text=True)
    c.check(miss.returncode == 2, f"no --tokenizer: exit {miss.returncode}")
    gone = subprocess.run(base + ["--checkpoint", os.path.join(work, "nope")], input="x\n", capture_output=True,
                          text=True)
    c.check(gone.returncode == 3 and "nope" in gone.stderr and gone.stdout == "",
            f"missing checkpoint: exit {gone.returncode} {gone.stderr}")

    # llama init / info: layouts, config-only defaults, usage errors
    for layout, hidden, layers, tied in (("1b", 2048, 16, True), ("8b", 4096, 32, False)):
        d = os.path.join(work, "cfg_" + layout)
        r = subprocess.run([transfuse, "llama", "init", "--layout", layout, "--out", d], capture_output=True, text=True)
        c.check(r.returncode == 0, f"init {layout}: {r.stderr}")
        cfg = json.load(open(os.path.join(d, "config.json")))
        c.check(cfg["hidden_size"] == hidden and cfg["num_hidden_layers"] == layers and
                cfg["tie_word_embeddings"] == tied and cfg["num_key_value_heads"] == 8 and
                cfg["vocab_size"] == 128256, f"{layout} config {cfg}")
        c.check(("rope_scaling" in cfg and cfg["rope_scaling"] is not None) == (layout == "1b"),
                f"{layout} rope_scaling {cfg.get('rope_scaling')}")
        c.check(not any(f.endswith(".safetensors") for f in os.listdir(d)), f"{layout}: weights written by default")
        info = subprocess.run([transfuse, "llama", "info", d], capture_output=True, text=True)
        c.check(info.returncode == 0 and "trainable total" in info.stdout, f"info {layout}: {info.stderr}")
        if layout == "8b":
            c.check(" 8030261248 params" in info.stdout, f"8b parameter count:\n{info.stdout}")
        if layout == "1b":
            c.check(" 1235814400 params" in info.stdout, f"1b parameter count:\n{info.stdout}")
    for args in (["--layout", "7b", "--out", work + "/x"], ["--layout", "tiny"], ["--layout", "tiny", "--out", work + "/x",
                 "--dtype", "f8"], ["--layout", "tiny", "--out", work + "/x", "--shard-size", "0"]):
        r = subprocess.run([transfuse, "llama", "init"] + args, capture_output=True, text=True)
        c.check(r.returncode == 2 and not os.path.exists(work + "/x"), f"init {args}: exit {r.returncode}")
    r = subprocess.run([transfuse, "llama", "info", os.path.join(work, "nope")], capture_output=True, text=True)
    c.check(r.returncode == 3, f"info of a missing folder: exit {r.returncode}")
    c.finish()


if __name__ == "__main__":
    main()
