"""A PyTorch twin of transfuse's LlamaFusion model (trainer/), written from
the description in docs/TRAINER.md and ../shared/reference/MODEL.md: a
Hugging Face Llama text path (frozen), an image copy of every layer, shared
attention under the Transfusion mask, the U-Net or linear image adapters,
the timestep embedding, L = LM cross-entropy + 5 x epsilon MSE.

It loads the same files as the C model (the Llama checkpoint, the trainable
tensors a FusionModel saves, a batch dumped by test_trainer_model) and
computes losses and gradients with autograd. Run in float64 by default, so
it is a reference for the C model's fp32 arithmetic. Safetensors are read
by the VAE twin's reader (tests/preprocess/vae/twin.py), not by the C one.
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

import importlib.util

_spec = importlib.util.spec_from_file_location(
    "vae_twin", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "preprocess", "vae", "twin.py"))
_vae_twin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_vae_twin)
st_read = _vae_twin.st_read


def load_llama(d):
    """(config dict, {name: tensor}) of a HF Llama folder, one file or sharded."""
    cfg = json.load(open(os.path.join(d, "config.json")))
    idx = os.path.join(d, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(idx):
        index = json.load(open(idx))
        for f in sorted(set(index["weight_map"].values())):
            t, _ = st_read(os.path.join(d, f))
            for name in t:
                assert index["weight_map"][name] == f, (name, f)
            tensors.update(t)
        assert set(tensors) == set(index["weight_map"]), "index and shards disagree"
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        assert index["metadata"]["total_size"] == total, (index["metadata"]["total_size"], total)
    else:
        tensors, _ = st_read(os.path.join(d, "model.safetensors"))
    return cfg, tensors


def rope_inv_freq(cfg):
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    rs = cfg.get("rope_scaling")
    if rs and rs.get("rope_type", rs.get("type")) == "llama3":
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wl, high_wl = old / low, old / high
        wl = 2 * math.pi / inv
        inv_l = torch.where(wl > low_wl, inv / factor, inv)
        smooth = (old / wl - low) / (high - low)
        smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
        medium = ~(wl < high_wl) & ~(wl > low_wl)
        inv = torch.where(medium, smoothed, inv_l)
    return inv


def timestep_embedding(t, dim, max_period=10000.0):
    """diffusers get_timestep_embedding, flip_sin_to_cos=True, shift 0, in double."""
    half = dim // 2
    ex = -math.log(max_period) * torch.arange(half, dtype=torch.float64) / half
    e = t.to(torch.float64)[:, None] * torch.exp(ex)[None, :]
    e = torch.cat([torch.cos(e), torch.sin(e)], dim=-1)
    if dim % 2:
        e = F.pad(e, (0, 1))
    return e


class Twin:
    def __init__(self, llama_dir, trainable_path, dtype=torch.float64):
        self.dt = dtype
        self.cfg, text = load_llama(llama_dir)
        self.text = {k: v.to(dtype) for k, v in text.items()}
        tr, meta = st_read(trainable_path)
        self.fc = json.loads(meta["transfuse.fusion_config"])
        self.p = {k: v.to(dtype).clone().requires_grad_(True) for k, v in tr.items()}
        c = self.cfg
        self.D = c["hidden_size"]
        self.NH, self.NKV = c["num_attention_heads"], c["num_key_value_heads"]
        self.HD = c.get("head_dim") or self.D // self.NH
        self.eps = c["rms_norm_eps"]
        self.L = c["num_hidden_layers"]
        self.tied = c.get("tie_word_embeddings", False)

    def tw(self, name):
        """A text weight: the trainable copy when the model trains the text path, else the checkpoint's."""
        return self.p[name] if name in self.p else self.text[name]

    # ---- pieces ----
    def rms(self, x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def lin(self, x, w, b=None):
        return F.linear(x, w, b)

    def rope(self, x, pos, cos, sin):
        # x (N, H, HD); rotate-half pairing
        h = self.HD // 2
        c, s = cos[pos][:, None, :], sin[pos][:, None, :]
        x1, x2 = x[..., :h], x[..., h:]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)

    def gn(self, x, pre):
        return F.group_norm(x, self.fc["unet_groups"], self.p[pre + ".weight"], self.p[pre + ".bias"], eps=1e-6)

    def conv(self, x, pre, stride=1):
        w = self.p[pre + ".weight"]
        return F.conv2d(x, w, self.p[pre + ".bias"], stride=stride, padding=w.shape[-1] // 2)

    def resblock(self, x, pre, st):
        h = self.conv(F.silu(self.gn(x, pre + ".norm1")), pre + ".conv1")
        h = h + self.lin(st, self.p[pre + ".time_emb_proj.weight"], self.p[pre + ".time_emb_proj.bias"])[:, :, None, None]
        h = self.conv(F.silu(self.gn(h, pre + ".norm2")), pre + ".conv2")
        sc = self.conv(x, pre + ".conv_shortcut") if (pre + ".conv_shortcut.weight") in self.p else x
        return h + sc

    def time_embed(self, t):
        F_ = self.p["time_embed.linear_1.weight"].shape[1]
        e = timestep_embedding(t, F_).to(self.dt)
        e = F.silu(self.lin(e, self.p["time_embed.linear_1.weight"], self.p["time_embed.linear_1.bias"]))
        return self.lin(e, self.p["time_embed.linear_2.weight"], self.p["time_embed.linear_2.bias"])

    def adapter_in(self, x, temb):
        K, C, H, W = x.shape
        p = self.fc["patch"]
        if self.fc["adapter"] == "linear":
            rows = x.reshape(K, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(K, -1, C * p * p)
            rows = self.lin(rows, self.p["image_in.proj.weight"], self.p["image_in.proj.bias"]) + temb[:, None, :]
            return rows.reshape(-1, self.D), None
        st = F.silu(temb)
        h = self.conv(x, "image_in.conv_in")
        skips = []
        for i in range(2):
            h = self.resblock(h, f"image_in.down_blocks.{i}.resnets.0", st)
            skips.append(h)
            pre = f"image_in.down_blocks.{i}.downsamplers.0.conv"
            if pre + ".weight" in self.p:
                h = self.conv(h, pre, stride=2)
        c1 = h.shape[1]
        rows = h.reshape(K, c1, -1).transpose(1, 2)
        rows = self.lin(rows, self.p["image_in.proj.weight"], self.p["image_in.proj.bias"])
        return rows.reshape(-1, self.D), (skips, h.shape, st)

    def adapter_out(self, rows, K, state):
        C, H, W = self.fc["latent"]
        p = self.fc["patch"]
        rows = rows.reshape(K, -1, self.D)
        if self.fc["adapter"] == "linear":
            pr = self.lin(rows, self.p["image_out.proj.weight"], self.p["image_out.proj.bias"])
            return pr.reshape(K, H // p, W // p, C, p, p).permute(0, 3, 1, 4, 2, 5).reshape(K, C, H, W)
        skips, shp, st = state
        h = self.lin(rows, self.p["image_out.proj.weight"], self.p["image_out.proj.bias"])
        h = h.transpose(1, 2).reshape(K, -1, shp[2], shp[3])
        for j in range(2):
            pre = f"image_out.up_blocks.{j}.upsamplers.0.conv"
            if pre + ".weight" in self.p:
                h = self.conv(F.interpolate(h, scale_factor=2, mode="nearest"), pre)
            h = torch.cat([h, skips[1 - j]], dim=1)
            h = self.resblock(h, f"image_out.up_blocks.{j}.resnets.0", st)
        h = F.silu(self.gn(h, "image_out.conv_norm_out"))
        return self.conv(h, "image_out.conv_out")

    # ---- the model ----
    def losses(self, batch):
        """(loss_lm, loss_diffusion) of a batch dumped by test_trainer_model."""
        tok = batch["tokens"].long()
        B, T = tok.shape
        N = B * T
        tok = tok.reshape(N)
        img = batch["modality"].reshape(N) == 1
        lo = batch["lo"].long().reshape(B, T)
        hi = batch["hi"].long().reshape(B, T)
        tgt = batch["targets"].long().reshape(N)
        slots = batch["images"]
        K = slots.shape[0]
        C, H, W = self.fc["latent"]
        x_t = batch["x_t"].to(self.dt).reshape(K, C, H, W)
        eps = batch["eps"].to(self.dt).reshape(K, C, H, W)
        E = self.text["model.embed_tokens.weight"]
        head = E if self.tied else self.text["lm_head.weight"]
        boi, eoi = self.fc["boi_id"], self.fc["eoi_id"]
        sp = self.p["model.embed_tokens_special.weight"]
        x = torch.zeros(N, self.D, dtype=self.dt)
        textpos = ~img
        x = torch.where(textpos[:, None], E[tok.clamp(min=0)], x)
        x = torch.where((tok == boi)[:, None], sp[0].expand(N, -1), x)
        x = torch.where((tok == eoi)[:, None], sp[1].expand(N, -1), x)
        iidx = torch.nonzero(img).reshape(-1)  # image positions in order = images in order, patches raster
        if K > 0:
            temb = self.time_embed(slots[:, 2])
            rows, state = self.adapter_in(x_t, temb)
            x = x.index_put((iidx,), rows)
        pos = (torch.arange(T)[None, :] - lo).reshape(N)
        inv = rope_inv_freq(self.cfg)
        ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
        cos, sin = torch.cos(ang).float().to(self.dt), torch.sin(ang).float().to(self.dt)
        j = torch.arange(T)
        mask = (j[None, None, :] >= lo[:, :, None]) & (j[None, None, :] < hi[:, :, None])  # (B,T,T)
        tidx = torch.nonzero(~img).reshape(-1)

        def both(name_t, name_i, h, fn):
            """Each modality's rows through its own weights (rows gathered, as the C model does)."""
            yt = fn(h[tidx], self.tw(name_t))
            yi = fn(h[iidx], self.p[name_i])
            out = torch.zeros(N, yt.shape[1], dtype=self.dt)
            return out.index_put((tidx,), yt).index_put((iidx,), yi)

        lin = self.lin
        for l in range(self.L):
            pt = pi = f"model.layers.{l}."
            h = both(pt + "input_layernorm.weight", pi + "input_layernorm_image.weight", x, self.rms)
            q = both(pt + "self_attn.q_proj.weight", pi + "self_attn.q_proj_image.weight", h, lin)
            k = both(pt + "self_attn.k_proj.weight", pi + "self_attn.k_proj_image.weight", h, lin)
            v = both(pt + "self_attn.v_proj.weight", pi + "self_attn.v_proj_image.weight", h, lin)
            q = self.rope(q.reshape(N, self.NH, self.HD), pos, cos, sin)
            k = self.rope(k.reshape(N, self.NKV, self.HD), pos, cos, sin)
            v = v.reshape(N, self.NKV, self.HD)
            rep = self.NH // self.NKV
            qb = q.reshape(B, T, self.NH, self.HD).transpose(1, 2)
            kb = k.reshape(B, T, self.NKV, self.HD).transpose(1, 2).repeat_interleave(rep, dim=1)
            vb = v.reshape(B, T, self.NKV, self.HD).transpose(1, 2).repeat_interleave(rep, dim=1)
            s = qb @ kb.transpose(-1, -2) / math.sqrt(self.HD)
            s = s.masked_fill(~mask[:, None], float("-inf"))
            a = (torch.softmax(s, dim=-1) @ vb).transpose(1, 2).reshape(N, self.NH * self.HD)
            x = x + both(pt + "self_attn.o_proj.weight", pi + "self_attn.o_proj_image.weight", a, lin)
            h = both(pt + "post_attention_layernorm.weight", pi + "post_attention_layernorm_image.weight", x, self.rms)
            g = both(pt + "mlp.gate_proj.weight", pi + "mlp.gate_proj_image.weight", h, lin)
            u = both(pt + "mlp.up_proj.weight", pi + "mlp.up_proj_image.weight", h, lin)
            m = F.silu(g) * u
            x = x + both(pt + "mlp.down_proj.weight", pi + "mlp.down_proj_image.weight", m, lin)
        ht = self.rms(x, self.tw("model.norm.weight"))
        hi_ = self.rms(x, self.p["model.norm_image.weight"])
        keep = tgt >= 0
        logits = ht[keep] @ head.t()
        lm = F.cross_entropy(logits, tgt[keep]) if keep.any() else torch.zeros((), dtype=self.dt)
        if K == 0:
            return lm, torch.zeros((), dtype=self.dt)
        pred = self.adapter_out(hi_[iidx], K, state)
        diff = ((pred - eps) ** 2).reshape(K, -1).mean(1).mean()
        return lm, diff

    def text_loss(self, tokens):
        """Mean next-token loss of one text-only sequence (what `eval text` prints)."""
        n = len(tokens)
        batch = {
            "tokens": torch.tensor([tokens], dtype=torch.float32),
            "modality": torch.zeros(1, n),
            "lo": torch.zeros(1, n),
            "hi": torch.arange(1, n + 1, dtype=torch.float32)[None],
            "targets": torch.tensor([tokens[1:] + [-1]], dtype=torch.float32),
            "images": torch.zeros(0, 3),
            "x_t": torch.zeros(0),
            "eps": torch.zeros(0),
        }
        with torch.no_grad():
            return self.losses(batch)[0].item()


def lr_at(peak, floor, warmup, total, step):
    """trainer/optim.c train_lr_at: linear warmup from 0, then cosine to the floor at `total`."""
    if peak == 0:
        return 0.0
    if warmup > 0 and step <= warmup:
        return peak * step / warmup
    if step >= total:
        return floor
    span = total - warmup
    x = (step - warmup) / span if span > 0 else 1.0
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * x))


def decays(name, t):
    """The C model's weight-decay rule (FusionTensor.decay): matrices and conv
    kernels, not norms, biases or the BOI/EOI rows."""
    return t.dim() >= 2 and name != "model.embed_tokens_special.weight"


def train_steps(twin, batch, n, peak, floor, warmup, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, clip=1.0):
    """n optimizer steps on one batch as trainer/optim.c takes them: the
    global gradient norm over every trainable tensor, clipped to `clip`
    (torch's clip_grad_norm_: max_norm / (norm + 1e-6), at most 1), AdamW
    (torch.optim.AdamW: decoupled decay, bias-corrected) with weight decay
    only on decays() tensors, the rate of train_lr_at per step. Returns
    [(loss_lm, loss_diffusion, grad_norm)] per step: the losses before
    that step's update."""
    items = list(twin.p.items())
    groups = [{"params": [t for k, t in items if decays(k, t)], "weight_decay": weight_decay},
              {"params": [t for k, t in items if not decays(k, t)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=peak, betas=betas, eps=eps)
    out = []
    for s in range(1, n + 1):
        opt.zero_grad(set_to_none=False)
        lm, diff = twin.losses(batch)
        (lm + 5.0 * diff).backward()
        norm = torch.nn.utils.clip_grad_norm_([t for _, t in items], clip)
        for g in opt.param_groups:
            g["lr"] = lr_at(peak, floor, warmup, n, s)
        opt.step()
        out.append((lm.item(), diff.item(), float(norm)))
    return out
