"""test_trainer_twin_steps.py TRANSFUSE TEST_TRAINER_MODEL WORKDIR

Ten optimizer steps, in C and in the PyTorch twin (fusion_twin.py,
float64), as llm.c's test checks its training loop: `test_trainer_model
steps` loads a tiny checkpoint, perturbs the trainable tensors, and takes
10 steps on one fixed batch with train_optim_step (global-norm clip 1.0,
AdamW 0.9/0.95/1e-8, weight decay 0.1 on matrices only, warmup 2 then
cosine from 1e-3 to 1e-4); the twin takes the same 10 steps with
torch.optim.AdamW and clip_grad_norm_ from the same weights and batch.

Checked, for both adapters:
  - the LM and diffusion losses before every step within LOSS_TOL
    relative: the one-pass check's tolerance (1e-5); C is fp32, so
    step 1 differs by rounding only (1e-8 to 1e-7 measured) and later
    steps by what the updates add;
  - the gradient norm of every step within NORM_TOL (1e-4 relative, the
    one-pass check's gradient tolerance);
  - every final trainable tensor: the difference of the two updates (final
    minus initial weights), as a norm over the tensor, within UPD_TOL of the
    twin's update norm. Not per element: Adam divides by sqrt(v), so an
    element whose gradient is within fp32 rounding of zero moves by up to
    the full rate in either direction; such elements are few, so the norm
    of the difference stays small while a wrong beta, rate, decay or clip
    moves it by percent (a wrong beta2 of 0.999 in the twin: see TRAINER.md).
  - and that training moved the losses (the steps are not no-ops).
"""
import os
import shutil
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from checks import Checks  # noqa: E402
from fusion_twin import Twin, st_read, train_steps  # noqa: E402

STEPS = 10
PEAK, FLOOR, WARMUP = 1e-3, 1e-4, 2  # test_trainer_model.c STEPS_*
LOSS_TOL = 1e-5
NORM_TOL = 1e-4
UPD_TOL = 1e-3


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr, file=sys.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return r


def main():
    transfuse, driver, work = sys.argv[1:4]
    beta2 = float(os.environ.get("TF_TWIN_BETA2", "0.95"))  # only to see the test fail
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    c = Checks("trainer_twin_steps")
    torch.set_num_threads(2)
    llama = os.path.join(work, "llama")
    run([transfuse, "llama", "init", "--layout", "tiny", "--init-std", "0.25", "--seed", "3", "--out", llama])
    for adapter in ("unet", "linear"):
        out = os.path.join(work, adapter)
        run([driver, "steps", llama, adapter, out, str(STEPS)])
        twin = Twin(llama, os.path.join(out, "trainable.safetensors"))
        init = {k: v.detach().clone() for k, v in twin.p.items()}
        batch, _ = st_read(os.path.join(out, "batch.safetensors"))
        res, _ = st_read(os.path.join(out, "steps.safetensors"))
        got = train_steps(twin, batch, STEPS, PEAK, FLOOR, WARMUP, betas=(0.9, beta2))
        worst = [0.0, 0.0, 0.0]
        for s, (lm, df, norm) in enumerate(got):
            c_lm = float(res["loss_lm"][s].double() + res["loss_lm_lo"][s].double())
            c_df = float(res["loss_diffusion"][s].double() + res["loss_diffusion_lo"][s].double())
            c_gn = float(res["grad_norm"][s])
            for i, (what, a, b, tol) in enumerate((("lm", c_lm, lm, LOSS_TOL), ("diffusion", c_df, df, LOSS_TOL),
                                                   ("grad norm", c_gn, norm, NORM_TOL))):
                rel = abs(a - b) / abs(b)
                worst[i] = max(worst[i], rel)
                c.check(rel <= tol, f"{adapter} step {s + 1}: {what} C {a:.9g} twin {b:.9g} rel {rel:.2e}")
            print(f"{adapter} step {s + 1}: lm C {c_lm:.9g} twin {lm:.9g}, diffusion C {c_df:.9g} twin {df:.9g}, "
                  f"grad norm C {c_gn:.6g} twin {norm:.6g}")
        c.check(got[-1][0] < got[0][0] and got[-1][1] < got[0][1], f"{adapter}: the losses did not fall: {got}")
        final, _ = st_read(os.path.join(out, "final.safetensors"))
        c.check(set(final) == set(twin.p), f"{adapter}: final tensors {sorted(set(final) ^ set(twin.p))}")
        wu = (0.0, "")
        for k, p in twin.p.items():
            upd_t = p.detach() - init[k]
            upd_c = final[k].double() - init[k]
            scale = upd_t.norm().item()
            if not c.check(scale > 0, f"{adapter}: {k} did not move in the twin"):
                continue
            rel = (upd_c - upd_t).norm().item() / scale
            c.check(rel <= UPD_TOL, f"{adapter}: {k}: update differs by {rel:.3e} of its norm {scale:.3e}")
            if rel > wu[0]:
                wu = (rel, k)
        print(f"{adapter}: {STEPS} steps, worst rel: lm {worst[0]:.2e}, diffusion {worst[1]:.2e}, grad norm "
              f"{worst[2]:.2e}; update {wu[0]:.2e} ({wu[1]})")
    c.finish()


if __name__ == "__main__":
    main()
