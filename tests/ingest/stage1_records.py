"""stage1_records.py: stage-1-like records for the tests of the encode
stage and the encode workers: centre crops of Debian's wallpaper photos
(distinct content only; some wallpapers come in several sizes) as Samples
with the crop in Sample.image ("rgb8" raw, every third one "png"), a
caption, tokens, provenance and extra, in `shards cat` JSON form; and the
embedded broker.

    from stage1_records import photo_crops, crop_records, shards_import, Broker
"""
import base64
import glob
import io
import json
import os
import subprocess
import time

import numpy as np
from PIL import Image

PHOTO_DIRS = ("/usr/share/backgrounds", "/usr/share/wallpapers")


def photo_crops(size, count):
    """Up to `count` distinct (size, size, 3) u8 crops, Pillow LANCZOS, in
    file name order; [] when no photo is installed."""
    photos = sorted(p for d in PHOTO_DIRS for p in glob.glob(f"{d}/**/*", recursive=True)
                    if os.path.splitext(p)[1].lower() in (".jpg", ".jpeg", ".png") and os.path.isfile(p))
    crops, seen = [], set()
    for p in photos:
        if len(crops) == count:
            break
        im = Image.open(p).convert("RGB")
        w, h = im.size
        side = min(w, h)
        x, y = (w - side) // 2, (h - side) // 2
        rgb = np.asarray(im.crop((x, y, x + side, y + side)).resize((size, size), Image.LANCZOS), dtype=np.uint8)
        if rgb.tobytes() not in seen:
            seen.add(rgb.tobytes())
            crops.append((p, rgb))
    return crops


def b64(b):
    return base64.b64encode(b).decode()


def crop_records(crops, n=None, key_fmt="k{:03d}"):
    """n records (default: one per crop; crops reused round robin), record i
    with key key_fmt.format(i). Returns (records, {key: rgb})."""
    n = len(crops) if n is None else n
    records, by_key = [], {}
    for i in range(n):
        path, rgb = crops[i % len(crops)]
        size = rgb.shape[0]
        key = key_fmt.format(i)
        if i % 3 == 2:
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, "PNG")
            image = {"format": "png", "width": size, "height": size, "data": b64(buf.getvalue())}
        else:
            image = {"format": "rgb8", "width": size, "height": size, "data": b64(rgb.tobytes())}
        records.append({"key": key, "caption": f"photo {i} {os.path.basename(path)}", "tokens": [128000, 100 + i, 7],
                        "image": image, "provenance": {"source_url": "file://" + path, "original_width": 9},
                        "extra": {"n": str(i)}})
        by_key[key] = rgb
    return records, by_key


def shards_import(T, work, out, prefix, records, shard_records=4):
    """`shards import` of records into folder out (shards PREFIX-NNNNNN),
    with a tokenizer identity in the facts. Returns the completed process."""
    facts = os.path.join(work, "facts.json")
    with open(facts, "w") as f:
        json.dump({"tokenizer": {"id": "t" * 64, "name": "llama3"}}, f)
    return subprocess.run([T, "shards", "import", "--out", out, "--prefix", prefix, "--facts", facts,
                           "--shard-records", str(shard_records)],
                          input="".join(json.dumps(r) + "\n" for r in records).encode(), capture_output=True)


class Broker:
    """`transfuse broker` with the given topics ("name:partitions") on a
    free loopback port; .bootstrap once started. Use as a context manager."""

    def __init__(self, T, work, *topics):
        self.bs_file = os.path.join(work, "bootstrap")
        if os.path.exists(self.bs_file):
            os.unlink(self.bs_file)
        args = [T, "broker", "--bootstrap-file", self.bs_file]
        for t in topics:
            args += ["--topic", t]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.bootstrap = ""
        for _ in range(1200):
            if os.path.exists(self.bs_file) and open(self.bs_file).read().strip():
                self.bootstrap = open(self.bs_file).read().strip()
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)

    def url(self, topic):
        return f"kafka://{self.bootstrap}/{topic}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()


# ---- what the worker tests share ----

def wait_for(checks, cond, what, bound=300, procs=()):
    """checks.wait_for with a failed check when `bound` seconds pass (a bound
    against hanging, not a timing assertion), or at once when one of `procs`
    (the workers the wait depends on) has exited. Returns cond's truth."""
    from checks import wait_for as wait
    wait(lambda: cond() or any(p.poll() is not None for p in procs), timeout=bound)
    ok = bool(cond())
    dead = [p.returncode for p in procs if p.poll() is not None]
    checks.check(ok, f"gave up waiting for {what}: " + (f"a worker exited with {dead}" if dead else
                                                         f"not within {bound} s"))
    return ok


def records_in(folder):
    """Records listed in folder's manifest (0 before it has one)."""
    try:
        with open(os.path.join(folder, "manifest.json")) as f:
            return json.load(f)["records"]
    except (OSError, ValueError, KeyError):
        return 0


def keys_of(T, path):
    """The keys of every record of a folder or topic (`shards cat`), in order; [] without a manifest."""
    if not kafka_or_exists(path):
        return []
    p = subprocess.run([T, "shards", "cat", path], capture_output=True)
    return [json.loads(line)["key"] for line in p.stdout.decode().splitlines()]


def kafka_or_exists(path):
    return path.startswith("kafka://") or os.path.exists(os.path.join(path, "manifest.json"))


def stop_process(checks, proc, name, log_text, code=130):
    """SIGTERM, then the exit status must be `code` (SIGKILL after 120 s)."""
    import signal
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    checks.check(rc == code, f"{name}: exit {rc} after SIGTERM, wanted {code}: {log_text()[-1500:]}")


def exactly_once(checks, keys, want, what):
    """Every wanted key exactly once in keys: `want` is the keys, or how many distinct ones there must be."""
    import collections
    n = collections.Counter(keys)
    dup = sorted(k for k, v in n.items() if v > 1)
    if isinstance(want, int):
        checks.check(not dup and len(n) == want, f"{what}: {len(n)} distinct keys of {want}, duplicated {dup[:5]}")
        return
    missing, extra = sorted(set(want) - set(n)), sorted(set(n) - set(want))
    checks.check(not dup and not missing and not extra,
                 f"{what}: duplicated {dup[:5]}, missing {missing[:5]}, unexpected {extra[:5]}")
