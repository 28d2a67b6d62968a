#!/usr/bin/env python3
"""Special and bad inputs for `transfuse preprocess crop`, made here with
Pillow / OpenCV / zlib: CMYK (Adobe-inverted and plain), progressive,
grayscale, EXIF orientations 2-8, 16-bit, palette + tRNS, gray + alpha,
Adam7-interlaced PNG, lossy / lossless / alpha / animated WebP; truncations
at several points, corrupted headers, empty files, HTML and text, headers
claiming 100000x100000, and the size/aspect policies.

Each input must give the right class, and each good one the right image:
PSNR against a reference built the way the quality test builds it (Pillow
decode, EXIF transpose, alpha onto white, LANCZOS, centre crop), above a
per-case floor. Exit 1 on any failure.

usage: cases.py TRANSFUSE [--keep DIR]
"""
import argparse, io, os, struct, subprocess, sys, tempfile, zlib
import numpy as np
import cv2
from PIL import Image, ImageOps

S = 256
failures = 0

def fail(msg):
    global failures
    failures += 1
    print("FAIL", msg)

def photo(w, h, seed=1):
    """A deterministic, photo-like test image: gradients, shapes, texture,
    and an asymmetric corner so that any wrong flip or rotation shows."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / w * 5 + seed) * np.cos(y / h * 3)
    g = 255 * x / w
    b = 255 * y / h
    img = np.stack([r, g, b], -1)
    rng = np.random.default_rng(seed)
    img += rng.normal(0, 6, img.shape)
    img[: h // 5, : w // 6] = [250, 20, 20]          # red block top-left
    img[h // 2 - h // 10: h // 2 + h // 10, w // 2: w // 2 + w // 12] = [20, 20, 20]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")

def target(w, h, s):
    k = s / min(w, h)
    return max(s, round(w * k)), max(s, round(h * k))

def flatten(im):
    im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
    return im.convert("RGB")

def reference(im):
    im = flatten(im)
    nw, nh = target(*im.size, S)
    im = im.resize((nw, nh), Image.LANCZOS)
    x, y = (nw - S) // 2, (nh - S) // 2
    return np.asarray(im.crop((x, y, x + S, y + S)), dtype=np.float64)

def psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)

def save(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)

def png_adam7(arr):
    """An Adam7-interlaced 8-bit RGB PNG (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b""
    for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
        sub = arr[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        for row in sub:
            raw += b"\0" + row.tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")

def jpeg_set_size(b, w, h):
    """Rewrites the SOF dimensions of a JPEG."""
    i = 2
    while i < len(b):
        m = b[i + 1]
        n = struct.unpack(">H", b[i + 2:i + 4])[0]
        if m in (0xC0, 0xC1, 0xC2):
            return b[:i + 5] + struct.pack(">HH", h, w) + b[i + 9:]
        i += 2 + n
    raise ValueError("no SOF")

def jpeg_strip_app14(b):
    i, out = 2, b[:2]
    while i < len(b):
        m = b[i + 1]
        if m == 0xDA:
            return out + b[i:]
        n = struct.unpack(">H", b[i + 2:i + 4])[0]
        if m != 0xEE:
            out += b[i:i + 2 + n]
        i += 2 + n
    return out

def png_set_size(b, w, h):
    ihdr = struct.pack(">II", w, h) + b[24:29]
    return b[:8] + png_chunk(b"IHDR", ihdr) + b[33:]

def webp_huge_canvas(b):
    """Wraps a simple WebP in a VP8X header whose canvas is 100000x100000."""
    inner = b[12:]
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0, 0, 0, 0]) + (100000 - 1).to_bytes(3, "little") + (100000 - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + inner
    return b"RIFF" + struct.pack("<I", len(body)) + body

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("transfuse")
    ap.add_argument("--keep", default=None)
    a = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    d = a.keep or tmp.name
    os.makedirs(d, exist_ok=True)
    out = os.path.join(d, "out")

    base = photo(600, 400)
    big = photo(2200, 2100, seed=3)   # short side / 8 >= 256: decoded at 1/8
    files = {}   # name -> (bytes, expected class, reference image or None, min PSNR)

    def add(name, data, cls="ok", ref=None, floor=0.0):
        files[name] = (data, cls, ref, floor)

    add("baseline.jpg", save(base, "JPEG", quality=92), ref=reference(base), floor=34)
    prog = save(big, "JPEG", quality=90, progressive=True)
    add("progressive.jpg", prog, ref=reference(big), floor=30)
    add("progressive_quarter.jpg", save(photo(1300, 1100, 5), "JPEG", quality=90, progressive=True),
        ref=reference(photo(1300, 1100, 5)), floor=32)
    gray = base.convert("L")
    add("gray.jpg", save(gray, "JPEG", quality=92), ref=reference(gray), floor=34)
    cmyk = save(base.convert("CMYK"), "JPEG", quality=92)            # Pillow writes Adobe (inverted) CMYK
    add("cmyk_adobe.jpg", cmyk, ref=reference(Image.open(io.BytesIO(cmyk))), floor=34)
    plain = jpeg_strip_app14(cmyk)                                     # no Adobe marker: plain CMYK
    add("cmyk_plain.jpg", plain, ref=reference(Image.open(io.BytesIO(plain))), floor=34)
    for o in range(2, 9):
        ex = Image.Exif()
        ex[0x0112] = o
        b = save(base, "JPEG", quality=92, exif=ex.tobytes())
        add(f"exif{o}.jpg", b, ref=reference(Image.open(io.BytesIO(b))), floor=34)
    arr = np.asarray(base)
    add("rgb.png", save(base, "PNG"), ref=reference(base), floor=45)
    ok16, b16 = cv2.imencode(".png", cv2.cvtColor(arr, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    add("rgb16.png", b16.tobytes(), ref=reference(base), floor=45)
    ok16g, g16 = cv2.imencode(".png", np.asarray(gray).astype(np.uint16) * 257)
    add("gray16.png", g16.tobytes(), ref=reference(gray), floor=45)
    add("gray.png", save(gray, "PNG"), ref=reference(gray), floor=45)
    pal = base.quantize(64)
    pal.info["transparency"] = 0
    palb = save(pal, "PNG", transparency=0)
    add("palette_trns.png", palb, ref=reference(Image.open(io.BytesIO(palb))), floor=40)
    rgba = base.copy()
    alpha = Image.fromarray((np.mgrid[0:400, 0:600][1] * 255 // 599).astype(np.uint8), "L")
    rgba.putalpha(alpha)
    add("rgba.png", save(rgba, "PNG"), ref=reference(rgba), floor=42)
    la = gray.copy()
    la.putalpha(alpha)
    la = Image.merge("LA", (gray, alpha))
    add("gray_alpha.png", save(la, "PNG"), ref=reference(la), floor=42)
    add("interlaced.png", png_adam7(arr), ref=reference(base), floor=45)
    add("lossy.webp", save(base, "WEBP", quality=90), ref=reference(base), floor=32)
    add("lossless.webp", save(base, "WEBP", lossless=True), ref=reference(base), floor=45)
    add("alpha.webp", save(rgba, "WEBP", lossless=True), ref=reference(rgba), floor=42)
    second = photo(600, 400, seed=9)
    anim = save(base, "WEBP", save_all=True, append_images=[second], duration=100, lossless=True, loop=0)
    add("animated.webp", anim, ref=reference(base), floor=45)
    small = photo(100, 60)
    add("small_upscaled.png", save(small, "PNG"), ref=reference(small), floor=40)

    # Bad input.
    jb = files["baseline.jpg"][0]
    for frac in (0.02, 0.3, 0.6, 0.95):
        add(f"trunc{int(frac * 100)}.jpg", jb[:int(len(jb) * frac)], "truncated")
    add("trunc50_progressive.jpg", prog[:len(prog) // 2], "truncated")
    add("trunc_soi.jpg", jb[:3], "truncated")
    pb = files["rgb.png"][0]
    for frac in (0.005, 0.3, 0.9):
        add(f"trunc{int(frac * 1000)}.png", pb[:int(len(pb) * frac)], "truncated")
    wb = files["lossy.webp"][0]
    for frac in (0.3, 0.8):
        add(f"trunc{int(frac * 100)}.webp", wb[:int(len(wb) * frac)], "truncated")
    add("bad_sof.jpg", jb[:jb.index(b"\xff\xc0") + 9] + b"\x00" + jb[jb.index(b"\xff\xc0") + 10:], "corrupt")
    bad_crc = bytearray(pb)
    bad_crc[20] ^= 0xFF   # inside IHDR: its CRC no longer matches
    add("bad_crc.png", bytes(bad_crc), "corrupt")
    bad_webp = bytearray(wb)
    bad_webp[20:40] = b"\xAA" * 20   # VP8 frame header
    add("bad_frame.webp", bytes(bad_webp), "corrupt")
    add("empty.jpg", b"", "not_image")
    add("page.jpg", b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n", "not_image")
    add("text.png", b"just some text that is not an image\n" * 4, "not_image")
    add("anim.gif", b"GIF89a" + b"\0" * 40, "unsupported")
    add("huge.jpg", jpeg_set_size(jb, 65535, 65535), "too_large")   # JPEG sides stop at 65535
    add("huge.png", png_set_size(pb, 100000, 100000), "too_large")
    add("huge.webp", webp_huge_canvas(wb), "too_large")

    os.makedirs(os.path.join(d, "in"), exist_ok=True)
    paths = []
    for name, (data, _, _, _) in files.items():
        p = os.path.join(d, "in", name)
        with open(p, "wb") as f:
            f.write(data)
        paths.append(p)

    def crop(extra, ps, outdir=out):
        r = subprocess.run([a.transfuse, "preprocess", "crop", "--threads", "2", "--out", outdir] + extra + ps,
                           capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"crop exited {r.returncode}: {r.stderr}")
            return {}
        lines = r.stdout.splitlines()
        if len(lines) != len(ps) or [l.split("\t")[0] for l in lines] != ps:
            fail("crop did not print one line per input in input order")
        return {os.path.basename(l.split("\t")[0]): l.split("\t")[1:] for l in lines}

    got = crop([], paths)
    for name, (data, cls, ref, floor) in files.items():
        g = got.get(name, ["missing", ""])
        if g[0] != cls:
            fail(f"{name}: expected {cls}, got {g[0]} ({g[1]})")
            continue
        if cls != "ok":
            print(f"ok   {name:28s} {g[0]:10s} {g[1]}")
            continue
        ours = np.asarray(Image.open(os.path.join(out, name + ".png")).convert("RGB"))
        p = psnr(ours, ref)
        print(f"{'ok  ' if p >= floor else 'FAIL'} {name:28s} {p:6.2f} dB (floor {floor})  {g[1]}")
        if p < floor or ours.shape != (S, S, 3):
            fail(f"{name}: PSNR {p:.2f} below {floor}")
        if name.startswith("exif") and f"exif-orientation {name[4]}" not in g[1]:
            fail(f"{name}: orientation not reported: {g[1]}")
        if name.startswith("gray") and not (np.array_equal(ours[..., 0], ours[..., 1]) and np.array_equal(ours[..., 1], ours[..., 2])):
            fail(f"{name}: gray input gave coloured output")

    # 16-bit PNGs must give exactly what their 8-bit twins give.
    for a16, a8 in (("rgb16.png", "rgb.png"), ("gray16.png", "gray.png")):
        x = np.asarray(Image.open(os.path.join(out, a16 + ".png")))
        y = np.asarray(Image.open(os.path.join(out, a8 + ".png")))
        if not np.array_equal(x, y):
            fail(f"{a16} differs from {a8}")
    # The progressive shortcut is exact: same pixels with and without it.
    if "ac-scans-skipped" not in got.get("progressive.jpg", ["", ""])[1]:
        fail("progressive.jpg: AC scans were not skipped at 1/8")
    noprune = os.path.join(d, "noprune")
    crop(["--no-prune"], [os.path.join(d, "in", "progressive.jpg")], noprune)
    x = np.asarray(Image.open(os.path.join(out, "progressive.jpg.png")))
    y = np.asarray(Image.open(os.path.join(noprune, "progressive.jpg.png")))
    if not np.array_equal(x, y):
        fail(f"pruned progressive decode differs from the full one (max {np.abs(x.astype(int) - y).max()})")
    else:
        print("ok   pruned progressive decode is bit-identical to the full decode")

    # Policies.
    pol = os.path.join(d, "in", "baseline.jpg")
    smallp = os.path.join(d, "in", "small_upscaled.png")
    for extra, p, cls in ((["--min-side", "500"], pol, "too_small"), (["--no-upscale"], smallp, "too_small"),
                          (["--max-aspect", "1.2"], pol, "bad_aspect"), (["--max-pixels", "200000"], pol, "too_large"),
                          (["--max-aspect", "1.6"], pol, "ok")):
        g = crop(extra, [p], os.path.join(d, "policy"))
        c = g.get(os.path.basename(p), ["missing"])[0]
        if c != cls:
            fail(f"{' '.join(extra)} on {os.path.basename(p)}: expected {cls}, got {c}")
        else:
            print(f"ok   {' '.join(extra):22s} -> {c}")

    # Usage errors exit 2 before any work.
    for args in (["crop", "--out", out, "--size", "0", pol], ["crop", pol], ["crop", "--bogus", "--out", out, pol],
                 ["crop", "--out", out, "--filter", "nearest", pol], ["bench", "--threads", "x", pol], ["nosuch"]):
        r = subprocess.run([a.transfuse, "preprocess"] + args, capture_output=True, text=True)
        if r.returncode != 2 or r.stdout:
            fail(f"preprocess {' '.join(args)}: exit {r.returncode}, stdout {r.stdout!r}")
    for args in (["--help"], ["crop", "--help"], ["bench", "--help"]):
        r = subprocess.run([a.transfuse, "preprocess"] + args, capture_output=True, text=True)
        if r.returncode != 0 or "usage" not in r.stdout:
            fail(f"preprocess {' '.join(args)}: no usage")

    print(f"cases: {len(files)} inputs, {failures} failure(s)")
    return 1 if failures else 0

if __name__ == "__main__":
    sys.exit(main())
