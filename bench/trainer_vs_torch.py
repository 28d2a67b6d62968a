"""A training step of the LlamaFusion model: transfuse (C, CPU kernels)
against the PyTorch twin (tests/trainer/fusion_twin.py, Debian's torch,
fp32) in the same run, same machine, same thread count, same checkpoint,
same trainable weights and the same batch.

usage: /usr/bin/python3 bench/trainer_vs_torch.py BUILD_DIR [--rounds 3]
         [--layouts tiny,50m] [--adapters unet,linear] [--batch 2]
         [--seq 1024] [--steps 2] [--threads 2]
       /usr/bin/python3 bench/trainer_vs_torch.py BUILD_DIR --memory-table

A step is zero_grad + forward + backward + global-norm clip + AdamW
(betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices). The C side is
bench/trainer_step_bench (it writes the batch and the weights the twin
loads); the twin runs torch.optim.AdamW and torch.nn.utils.clip_grad_norm_.
Rounds alternate C and PyTorch, so load from other processes hits both;
each round's figure is the median of --steps timed steps after a warm-up.
Each round also times the C side with OMP_WAIT_POLICY=passive (libgomp's
threads sleep instead of spinning while they wait: on a machine whose
cores other processes share, spinning costs several times the step).
The summary per case: median and range over the rounds of the ratio
(PyTorch step time / transfuse step time), and the GFLOP/s each side
achieves against the sgemm peak that the C side measured in the same
round. FLOPs are counted analytically (see flops()).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "trainer"))
from fusion_twin import Twin, st_read  # noqa: E402


def flops(twin, batch):
    """Matrix FLOPs of one forward + backward, counted as the work needs
    them (not as a kernel tiles it):
      - every linear layer (in -> out) of the layers, both modalities: forward
        2 n in out; backward dx 2 n in out for all rows (gradients flow
        through the frozen text path), dW 2 n in out for trainable rows only;
      - attention: 4 HD flops per visible (query, key) pair per head forward,
        2.5x that backward (kernels_bench's convention);
      - the LM head over targeted positions: 2 n D V forward, 2 n D V for dh
        (the head is frozen: no dW);
      - the adapters: convolutions as direct convolutions 2 Cin Cout k k
        Hout Wout per image forward, twice that backward (dx + dW); linear
        projections as above."""
    c = twin.cfg
    D, L, V = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    NH, NKV = c["num_attention_heads"], c["num_key_value_heads"]
    HD = c.get("head_dim") or D // NH
    I = c["intermediate_size"]
    mod = batch["modality"].reshape(-1)
    n_img = int((mod == 1).sum())
    N = mod.numel()
    n_txt = N - n_img
    lin = [(D, NH * HD), (D, NKV * HD), (D, NKV * HD), (NH * HD, D), (D, I), (D, I), (I, D)]
    f = 0.0
    for fin, fout in lin:
        f += L * (2 * N * fin * fout * 2 + 2 * n_img * fin * fout)
    lo, hi = batch["lo"].long(), batch["hi"].long()
    pairs = float((hi - lo).sum())  # visible keys per query, summed
    f += L * NH * pairs * 4 * HD * 3.5
    ntgt = int((batch["targets"] >= 0).sum())
    f += 4.0 * ntgt * D * V
    K = batch["images"].shape[0]
    C, H, W = twin.fc["latent"]
    p = twin.fc["patch"]
    lp = {1: 0, 2: 1, 4: 2}[p]
    for name, w in twin.p.items():
        if not name.startswith("image_") or not name.endswith(".weight"):
            continue
        if w.dim() == 4:
            if ".down_blocks." in name:
                i = int(name.split(".down_blocks.")[1].split(".")[0])
                s = 2 ** (i + 1) if ".downsamplers." in name else 2 ** min(i, lp)
            elif ".up_blocks." in name:
                j = int(name.split(".up_blocks.")[1].split(".")[0])
                s = 2 ** min(1 - j, lp)
            else:
                s = 1
            co, ci, kh, kw = w.shape
            f += 3 * 2.0 * co * ci * kh * kw * (H // s) * (W // s) * K
        elif w.dim() == 2 and name.endswith("proj.weight") and "time_emb" not in name:
            f += 3 * 2.0 * n_img * w.shape[0] * w.shape[1]
    return f


def run_c(build, llama, adapter, out, a, env=None):
    cmd = [os.path.join(build, "bench", "trainer_step_bench"), "--llama", llama, "--adapter", adapter, "--out", out,
           "--batch", str(a.batch), "--seq", str(a.seq), "--steps", str(a.steps), "--threads", str(a.threads)]
    r = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(r.stdout.strip().splitlines()[-1])


def decay_of(name, t):
    """The C model's weight-decay rule: matrices and conv kernels, not norms, biases or the special rows."""
    return t.dim() >= 2 and name != "model.embed_tokens_special.weight"


def run_torch(twin, batch, steps, lr=1e-4):
    """Median seconds and CPU-seconds of `steps` twin steps after a warm-up, and the first step's losses."""
    params = list(twin.p.items())
    opt = torch.optim.AdamW([{"params": [t for n, t in params if decay_of(n, t)], "weight_decay": 0.1},
                             {"params": [t for n, t in params if not decay_of(n, t)], "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8)
    times, cpu, first = [], [], None
    for s in range(steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=False)
        lm, diff = twin.losses(batch)
        (lm + 5.0 * diff).backward()
        torch.nn.utils.clip_grad_norm_([t for _, t in params], 1.0)
        opt.step()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if s == 0:
            first = (lm.item(), diff.item())
        else:
            times.append(dt)
            cpu.append(dc)
    return statistics.median(times), statistics.median(cpu), first


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layouts", default="tiny,50m")
    ap.add_argument("--adapters", default="unet,linear")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-table", action="store_true")
    a = ap.parse_args()
    if a.memory_table:
        subprocess.run([os.path.join(a.build, "bench", "trainer_step_bench"), "--memory-table"], check=True)
        return
    # PyTorch's intra-op threads; ours: the kernels' --threads (OpenBLAS runs
    # single-threaded inside the kernels' OpenMP tiles, kernels_cpu.c)
    torch.set_num_threads(a.threads)
    tmp = tempfile.TemporaryDirectory()
    print("machine: %d CPUs online, load average %s; torch %s, %d threads" %
          (os.cpu_count(), os.getloadavg(), torch.__version__, torch.get_num_threads()))
    cases = [(lay, ad) for lay in a.layouts.split(",") for ad in a.adapters.split(",")]
    llamas = {}
    for lay in a.layouts.split(","):
        d = os.path.join(tmp.name, lay)
        subprocess.run([os.path.join(a.build, "cli", "transfuse"), "llama", "init", "--layout", lay, "--seed", "1",
                        "--out", d], check=True, capture_output=True)
        llamas[lay] = d
    res = {cs: [] for cs in cases}
    for r in range(a.rounds):
        for lay, ad in cases:
            out = os.path.join(tmp.name, f"{lay}_{ad}")
            c = run_c(a.build, llamas[lay], ad, out, a)
            # the same with OpenMP threads that sleep when they wait (libgomp
            # reads this at process start): what a shared machine needs
            cp = run_c(a.build, llamas[lay], ad, out + "_passive", a, env=dict(os.environ, OMP_WAIT_POLICY="passive"))
            twin = Twin(llamas[lay], os.path.join(out, "trainable.safetensors"), dtype=torch.float32)
            batch, _ = st_read(os.path.join(out, "batch.safetensors"))
            fl = flops(twin, batch)
            t, tc, first = run_torch(twin, batch, a.steps)
            cs = statistics.median(c["step_s"])
            cps = statistics.median(cp["step_s"])
            res[(lay, ad)].append((cs, t, fl, c, tc / statistics.median(c["cpu_s"]), cps))
            mem = c["memory"]
            per_param = (mem["params"] + mem["grads"] + mem["adamw"]) / c["trainable"]
            print("round %d %s %s (load %.1f): transfuse %.3f s/step (fwd+bwd %.3f, AdamW %.4f), %.0f GFLOP/s "
                  "of sgemm peak %.0f | PyTorch fp32 %.3f s/step, %.0f GFLOP/s | ratio %.2fx wall, %.2fx CPU | "
                  "losses C %.6g/%.6g twin %.6g/%.6g | memory: %.1f B per trainable parameter, frozen %.0f MiB, "
                  "activations %.0f MiB | OMP_WAIT_POLICY=passive: %.3f s/step, ratio %.2fx" %
                  (r + 1, lay, ad, os.getloadavg()[0], cs, statistics.median(c["fwd_bwd_s"]),
                   statistics.median(c["optim_s"]), fl / cs / 1e9, c["sgemm_peak_gflops"], t, fl / t / 1e9, t / cs,
                   res[(lay, ad)][-1][4],
                   c["loss_lm"], c["loss_diffusion"], first[0], first[1], per_param, mem["frozen"] / 2**20,
                   mem["activations"] / 2**20, cps, t / cps), flush=True)
            del twin
    print("\nB %d x T %d, %d threads, %d rounds, each the median of %d steps after a warm-up\n" %
          (a.batch, a.seq, a.threads, a.rounds, a.steps))
    print("| layout | adapter | GFLOP/step | trainable | transfuse s/step (median) | GFLOP/s | of sgemm peak | "
          "PyTorch s/step | GFLOP/s | ratio median (range) | per CPU-second | passive s/step | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (lay, ad), rows in res.items():
        ratios = [x[1] / x[0] for x in rows]
        cratios = [x[4] for x in rows]
        pratios = [x[1] / x[5] for x in rows]
        cs = statistics.median(x[0] for x in rows)
        t = statistics.median(x[1] for x in rows)
        fl = rows[0][2]
        peak = statistics.median(x[3]["sgemm_peak_gflops"] for x in rows)
        print("| %s | %s | %.1f | %.2fM | %.3f | %.0f | %.0f%% (%.0f) | %.3f | %.0f | **%.2fx** (%.2f-%.2f) | %.2fx (%.2f-%.2f) | %.3f | %.2fx (%.2f-%.2f) |" %
              (lay, ad, fl / 1e9, rows[0][3]["trainable"] / 1e6, cs, fl / cs / 1e9, 100 * fl / cs / 1e9 / peak, peak,
               t, fl / t / 1e9, statistics.median(ratios), min(ratios), max(ratios), statistics.median(cratios),
               min(cratios), max(cratios), statistics.median(x[5] for x in rows), statistics.median(pratios),
               min(pratios), max(pratios)))


if __name__ == "__main__":
    main()
