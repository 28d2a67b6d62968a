"""test_trainer_twin.py TRANSFUSE TEST_TRAINER_MODEL WORKDIR

The C LlamaFusion model against its PyTorch twin (fusion_twin.py, float64): for
each case, `transfuse llama init` writes a tiny checkpoint, the C test
program perturbs the trainable tensors, dumps them with a batch (two rows,
packed documents, padding, three images, one image-first sample) and runs
forward + backward; the twin loads the same files and must agree:
losses within 1e-5 relative, every trainable gradient within 1e-4 relative
(max |difference| over the tensor's max |gradient|).

Cases: tied f32 checkpoint with the U-Net adapter; the same with the linear
adapter; an untied bf16 checkpoint sharded into several files (the twin
reads the index and checks it covers every shard) with the U-Net adapter;
an untied f32 checkpoint with the linear adapter and the text path trained
too (train_text: the text copy's gradients checked as well).
"""
import json
import os
import shutil
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from checks import Checks  # noqa: E402
from fusion_twin import Twin, load_llama, st_read  # noqa: E402

LOSS_TOL = 1e-5
GRAD_TOL = 1e-4


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr, file=sys.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return r


def main():
    transfuse, dumper, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    c = Checks("trainer_twin")
    torch.set_num_threads(2)
    cases = [
        ("tied_unet", ["--seed", "3"], "unet"),
        ("tied_linear", ["--seed", "4"], "linear"),
        ("untied_sharded_bf16_unet", ["--seed", "5", "--untied", "--dtype", "bf16", "--shard-size", "10M"], "unet"),
        ("train_text_linear", ["--seed", "6", "--untied"], "linear+text"),
    ]
    for name, init_args, adapter in cases:
        extra = ["train_text"] if adapter.endswith("+text") else []
        adapter = adapter.split("+")[0]
        llama = os.path.join(work, name, "llama")
        out = os.path.join(work, name, "dump")
        run([transfuse, "llama", "init", "--layout", "tiny", "--init-std", "0.25", "--out", llama] + init_args)
        # the layout: files, config, index
        cfg, tensors = load_llama(llama)
        c.check(cfg["model_type"] == "llama" and cfg["hidden_size"] == 64 and cfg["vocab_size"] == 128256,
                f"{name}: config.json {cfg}")
        c.check(os.path.exists(os.path.join(llama, "generation_config.json")), f"{name}: generation_config.json")
        sharded = "--shard-size" in init_args
        has_index = os.path.exists(os.path.join(llama, "model.safetensors.index.json"))
        c.check(has_index == sharded, f"{name}: index present {has_index}, sharded {sharded}")
        if sharded:
            index = json.load(open(os.path.join(llama, "model.safetensors.index.json")))
            files = sorted(set(index["weight_map"].values()))
            c.check(len(files) >= 2 and all(f.endswith(f"-of-{len(files):05d}.safetensors") for f in files),
                    f"{name}: shard names {files}")
        c.check(("lm_head.weight" in tensors) == ("--untied" in init_args), f"{name}: lm_head presence")
        want_dtype = torch.bfloat16 if "bf16" in init_args else torch.float32
        c.check(all(t.dtype == want_dtype for t in tensors.values()), f"{name}: dtypes")
        c.check(cfg["tie_word_embeddings"] == ("--untied" not in init_args), f"{name}: tie_word_embeddings")
        n_expect = 1 + 2 * 9 + 1 + (1 if "--untied" in init_args else 0)
        c.check(len(tensors) == n_expect, f"{name}: {len(tensors)} tensors, expected {n_expect}")

        r = run([dumper, "dump", llama, adapter, out] + extra)
        print(f"{name}: C {r.stderr.strip()}")
        twin = Twin(llama, os.path.join(out, "trainable.safetensors"))
        batch, _ = st_read(os.path.join(out, "batch.safetensors"))
        res, _ = st_read(os.path.join(out, "result.safetensors"))
        lm, diff = twin.losses(batch)
        (lm + 5.0 * diff).backward()
        c_lm = float(res["loss_lm"][0].double() + res["loss_lm_lo"][0].double())
        c_df = float(res["loss_diffusion"][0].double() + res["loss_diffusion_lo"][0].double())
        for what, a, b in (("lm", c_lm, lm.item()), ("diffusion", c_df, diff.item())):
            rel = abs(a - b) / abs(b)
            print(f"{name}: loss {what}: C {a:.9g} twin {b:.9g} rel {rel:.2e}")
            c.check(rel <= LOSS_TOL, f"{name}: loss {what} C {a} twin {b} rel {rel}")
        worst = (0.0, "")
        names = [k for k in res if k.startswith("grad.")]
        c.check(len(names) == len(twin.p), f"{name}: {len(names)} gradients for {len(twin.p)} tensors")
        n_text = sum(1 for k in twin.p if "_image" not in k and k.startswith("model.") and "special" not in k)
        c.check(n_text == (2 * 9 + 1 if extra else 0), f"{name}: {n_text} trainable text tensors")
        for k in names:
            p = k[len("grad."):]
            g_c = res[k].double()
            g_t = twin.p[p].grad
            if not c.check(g_t is not None, f"{name}: {p} has no twin gradient"):
                continue
            scale = g_t.abs().max().item()
            err = (g_c - g_t).abs().max().item() / scale if scale > 0 else (g_c.abs().max().item())
            c.check(scale > 0, f"{name}: {p}: zero gradient in the twin")
            c.check(err <= GRAD_TOL, f"{name}: {p}: gradient rel error {err:.3e} (max |g| {scale:.3e})")
            if err > worst[0]:
                worst = (err, p)
        print(f"{name}: {len(names)} gradients, worst rel error {worst[0]:.2e} ({worst[1]})")
    c.finish()


if __name__ == "__main__":
    main()
