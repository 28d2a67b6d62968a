"""A PyTorch twin of diffusers' AutoencoderKL, written from the diffusers
architecture (diffusers itself is not installed here), used to check
transfuse's C VAE and as the benchmark peer.

It reads and writes safetensors itself (json + raw bytes), so it shares no
code with the C reader. Module and parameter names follow diffusers, so a
state dict loads from a diffusers checkpoint by name; the older attention
names (query/key/value/proj_attn, possibly 1x1-conv-shaped) are mapped as
diffusers' own loader does.
"""
import json
import math
import os
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
NAMES = {v: k for k, v in DTYPES.items()}


# ---- safetensors ----

def st_read(path):
    """Returns ({name: tensor}, metadata) from one .safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    meta = header.pop("__metadata__", {})
    base = 8 + hlen
    out = {}
    for name, e in header.items():
        b, en = e["data_offsets"]
        buf = bytearray(data[base + b:base + en])
        t = torch.frombuffer(buf, dtype=DTYPES[e["dtype"]]) if len(buf) else torch.empty(0, dtype=DTYPES[e["dtype"]])
        out[name] = t.reshape(e["shape"]).clone()
    return out, meta


def st_write(path, tensors, metadata=None):
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    off = 0
    blobs = []
    for name, t in tensors.items():
        t = t.contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_checkpoint(folder):
    """config dict and the state dict of a diffusers VAE folder (one file
    or sharded through the index)."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    single = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    if os.path.exists(single):
        sd, _ = st_read(single)
    else:
        with open(single + ".index.json") as f:
            idx = json.load(f)
        sd = {}
        for shard in sorted(set(idx["weight_map"].values())):
            part, _ = st_read(os.path.join(folder, shard))
            sd.update(part)
    return cfg, sd


# ---- the model ----

class Resnet(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nn.Module):
    """diffusers Attention as built for the VAE mid block: one head of
    dim C, GroupNorm first, residual, softmax upcast to fp32."""

    def __init__(self, c, groups):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.to_q = nn.Linear(c, c)
        self.to_k = nn.Linear(c, c)
        self.to_v = nn.Linear(c, c)
        self.to_out = nn.ModuleList([nn.Linear(c, c), nn.Dropout(0.0)])

    def forward(self, x):
        b, c, h, w = x.shape
        r = x
        x = self.group_norm(x).view(b, c, h * w).transpose(1, 2)
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        s = torch.baddbmm(torch.empty(b, h * w, h * w, dtype=q.dtype), q, k.transpose(1, 2), beta=0,
                          alpha=1.0 / math.sqrt(c))
        p = s.float().softmax(dim=-1).to(q.dtype)
        o = self.to_out[0](torch.bmm(p, v))
        return o.transpose(1, 2).reshape(b, c, h, w) + r


class Mid(nn.Module):
    def __init__(self, c, groups, attn):
        super().__init__()
        self.resnets = nn.ModuleList([Resnet(c, c, groups), Resnet(c, c, groups)])
        self.attentions = nn.ModuleList([Attention(c, groups)] if attn else [])

    def forward(self, x):
        x = self.resnets[0](x)
        if len(self.attentions):
            x = self.attentions[0](x)
        return self.resnets[1](x)


class Down(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Up(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Block(nn.Module):
    def __init__(self, resnets, sampler, sampler_name):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        if sampler is not None:
            setattr(self, sampler_name, nn.ModuleList([sampler]))
        self.sampler_name = sampler_name if sampler is not None else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        if self.sampler_name:
            x = getattr(self, self.sampler_name)[0](x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        boc, g, lpb = cfg["block_out_channels"], cfg.get("norm_num_groups", 32), cfg.get("layers_per_block", 1)
        L = cfg.get("latent_channels", 4)
        self.conv_in = nn.Conv2d(3, boc[0], 3, padding=1)
        blocks, out = [], boc[0]
        for i, c in enumerate(boc):
            cin, out = out, c
            res = [Resnet(cin if j == 0 else out, out, g) for j in range(lpb)]
            blocks.append(Block(res, Down(out) if i != len(boc) - 1 else None, "downsamplers"))
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = Mid(boc[-1], g, cfg.get("mid_block_add_attention", True))
        self.conv_norm_out = nn.GroupNorm(g, boc[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(boc[-1], 2 * L, 3, padding=1)

    def forward(self, x):
        x = self.conv_in(x)
        for b in self.down_blocks:
            x = b(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        boc, g, lpb = cfg["block_out_channels"], cfg.get("norm_num_groups", 32), cfg.get("layers_per_block", 1)
        L = cfg.get("latent_channels", 4)
        rev = list(reversed(boc))
        self.conv_in = nn.Conv2d(L, rev[0], 3, padding=1)
        self.mid_block = Mid(rev[0], g, cfg.get("mid_block_add_attention", True))
        blocks, out = [], rev[0]
        for i, c in enumerate(rev):
            prev, out = out, c
            res = [Resnet(prev if j == 0 else out, out, g) for j in range(lpb + 1)]
            blocks.append(Block(res, Up(out) if i != len(rev) - 1 else None, "upsamplers"))
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_norm_out = nn.GroupNorm(g, boc[0], eps=1e-6)
        self.conv_out = nn.Conv2d(boc[0], 3, 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for b in self.up_blocks:
            x = b(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    def __init__(self, cfg, encoder=True, decoder=True):
        super().__init__()
        self.cfg = cfg
        L = cfg.get("latent_channels", 4)
        self.encoder = Encoder(cfg) if encoder else None
        self.decoder = Decoder(cfg) if decoder else None
        self.quant_conv = nn.Conv2d(2 * L, 2 * L, 1) if encoder and cfg.get("use_quant_conv", True) else None
        self.post_quant_conv = nn.Conv2d(L, L, 1) if decoder and cfg.get("use_post_quant_conv", True) else None

    def encode(self, x):
        """(mean, logvar) of the posterior, logvar clamped like diffusers."""
        h = self.encoder(x)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        mean, logvar = torch.chunk(h, 2, dim=1)
        return mean, torch.clamp(logvar, -30.0, 20.0)

    def decode_scaled(self, latent):
        scale = self.cfg.get("scaling_factor", 0.18215)
        shift = self.cfg.get("shift_factor") or 0.0
        z = latent / scale + shift
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)


OLD = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def build(folder, encoder=True, decoder=True, dtype=torch.float32):
    cfg, sd = load_checkpoint(folder)
    m = AutoencoderKL(cfg, encoder, decoder)
    want = m.state_dict()
    state = {}
    for name, p in want.items():
        t = sd.get(name)
        if t is None:
            for cur, old in OLD.items():
                if "." + cur + "." in name:
                    t = sd.get(name.replace("." + cur + ".", "." + old + "."))
        if t is None:
            raise KeyError("missing tensor " + name)
        if t.dim() == 4 and p.dim() == 2:
            t = t[:, :, 0, 0]
        state[name] = t.to(torch.float32)
    m.load_state_dict(state, strict=True)
    return m.to(dtype).eval()


def random_checkpoint(folder, cfg, seed, old_names=False, dtype=torch.float32, shards=1):
    """Writes a random diffusers-layout checkpoint from Python (independent
    of `transfuse vae init`): optionally with old attention names stored as
    1x1 convs, a 16-bit dtype, and split into shards with an index."""
    torch.manual_seed(seed)
    m = AutoencoderKL(cfg)
    sd = {}
    for name, t in m.state_dict().items():
        t = t.clone()
        if "norm" in name:
            t += 0.1 * (2 * torch.rand_like(t) - 1)
        if old_names and ".attentions." in name:
            for cur, old in OLD.items():
                if "." + cur + "." in name:
                    name = name.replace("." + cur + ".", "." + old + ".")
                    if t.dim() == 2:
                        t = t[:, :, None, None]
        sd[name] = t.to(dtype).contiguous()
    os.makedirs(folder, exist_ok=True)
    full = dict(cfg)
    full.setdefault("_class_name", "AutoencoderKL")
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(full, f, indent=2)
    names = list(sd)
    if shards == 1:
        st_write(os.path.join(folder, "diffusion_pytorch_model.safetensors"), sd, {"format": "pt"})
        return
    wm = {}
    for s in range(shards):
        fname = "diffusion_pytorch_model-%05d-of-%05d.safetensors" % (s + 1, shards)
        part = {n: sd[n] for n in names[s::shards]}
        st_write(os.path.join(folder, fname), part, {"format": "pt"})
        wm.update({n: fname for n in part})
    with open(os.path.join(folder, "diffusion_pytorch_model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, f)
