#!/usr/bin/env python3
"""test_ingest_encode: `transfuse ingest encode` (stage 2) on stage-1-like
records: crops of Debian's wallpaper photos as Sample.image ("rgb8" raw and
"png"), with captions, tokens, provenance and extra, imported as shards.
The final records carry latents equal to `transfuse vae encode` of the same
crops (bf16 rounding), keep everything else, drop the crop (kept with
--keep-crop); bad crops are "bad_crop" failures; `shards verify` passes; a
rerun adds nothing; --from-prefix reads one job's shards; a topic to a topic
on the embedded broker gives every key once; bad flags exit 2.

A stop (SIGINT, with the SD-sized VAE so that it comes mid-run) exits 130
with what was finished published and no stats file; a rerun completes it
with every key once.

    test_ingest_encode.py TRANSFUSE SD_VAE_DIR WORKDIR
"""
import base64
import json
import os
import shutil
import signal
import struct
import subprocess
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import Checks  # noqa: E402
from stage1_records import (Broker, b64, crop_records, exactly_once, keys_of, photo_crops, records_in,  # noqa: E402
                            shards_import, wait_for)

T, SD_VAE, W = sys.argv[1:4]
c = Checks("test_ingest_encode")
shutil.rmtree(W, ignore_errors=True)
os.makedirs(W)



def run(*argv, code=0, **kw):
    p = subprocess.run([T, *argv], capture_output=True, **kw)
    c.check(p.returncode == code, f"{argv[:3]}: exit {p.returncode}, wanted {code}: {p.stderr.decode()[-2000:]}")
    return p


S = 64  # the tiny VAE (factor 8) at 64x64: 8x8 latents, quick on two cores
photo_crops_found = photo_crops(S, 10)
if len(photo_crops_found) < 4:
    print("skipped: no wallpaper photos installed (mate-backgrounds, gnome-backgrounds)")
    sys.exit(77)
records, crops = crop_records(photo_crops_found)
good = len(records)
bad = [
    {"key": "bad-none", "caption": "no crop"},
    {"key": "bad-size", "caption": "wrong size", "image": {"format": "rgb8", "width": S, "height": S,
                                                          "data": b64(b"\0" * 100)}},
    {"key": "bad-png", "caption": "garbage png", "image": {"format": "png", "width": S, "height": S,
                                                          "data": b64(b"\x89PNG\r\n\x1a\nnot really")}},
    {"key": "bad-fmt", "caption": "jpeg", "image": {"format": "jpeg", "width": S, "height": S, "data": b64(b"xx")}},
    {"key": "bad-side", "caption": "other side", "image": {"format": "rgb8", "width": S * 2, "height": S * 2,
                                                          "data": b64(b"\0" * (S * S * 12))}},
]


def import_(out, prefix, recs):
    p = shards_import(T, W, out, prefix, recs)
    c.check(p.returncode == 0, f"shards import: {p.stderr.decode()}")


crops_dir = f"{W}/crops"
import_(crops_dir, "jobA", records[:6] + bad[:3])
import_(crops_dir, "jobB", records[6:] + bad[3:])

vae = f"{W}/vae"
run("vae", "init", "--layout", "tiny", "--seed", "3", "--out", vae)
out = f"{W}/final"
p = run("ingest", "encode", "--from", crops_dir, "--out", out, "--vae", vae, "--threads", "2", "--batch", "3",
        "--shard-records", "4", "--job", "enc1")
stats = json.load(open(f"{out}/ingest-jobs/enc1.encode.json"))
c.check(stats["attempted"] == good + len(bad) and stats["succeeded"] == good and stats["failed"] == len(bad) and
        stats["skipped"] == 0, f"stats {stats}")
c.check(stats["failures"] == {"bad_crop": len(bad)}, f"failures {stats['failures']}")
c.check(all(k in p.stderr.decode() for k in ("bad-none", "bad-size", "bad-png", "bad-fmt", "bad-side")),
        "every bad crop is named on stderr")
run("shards", "verify", out)
mf = json.load(open(f"{out}/manifest.json"))
c.check(mf["facts"]["latent"] == {"dtype": "bf16", "shape": [4, S // 8, S // 8]}, f"facts {mf['facts']}")
c.check(mf["facts"]["tokenizer"]["id"] == "t" * 64, "the crops' tokenizer identity is kept")
c.check(len(mf["facts"]["vae"]["id"]) == 64, "the VAE identity is recorded")
c.check(all(s["name"].startswith("enc1-") for s in mf["shards"]), "shards are named JOB-NNNNNN")
recs = {r["key"]: r for r in map(json.loads, run("shards", "cat", out).stdout.decode().splitlines())}
c.check(sorted(recs) == sorted(r["key"] for r in records), f"keys {sorted(recs)}")
for r in records:
    o = recs.get(r["key"], {})
    c.check(o.get("caption") == r["caption"] and o.get("tokens") == r["tokens"] and o.get("extra") == r["extra"] and
            o.get("provenance") == r["provenance"], f"{r['key']}: fields kept")
    c.check("image" not in o, f"{r['key']}: crop dropped")

# Latents equal `vae encode` of the same crops (PNG files, decoded losslessly).
files = []
for k in sorted(crops):
    f = f"{W}/{k}.png"
    Image.fromarray(crops[k]).save(f)
    files.append(f)
st = f"{W}/want.safetensors"
run("vae", "encode", "--vae", vae, "--size", str(S), "--latent", "mean", "--threads", "2", "--out", st, *files)
raw = open(st, "rb").read()
(hlen,) = struct.unpack_from("<Q", raw, 0)
hdr = json.loads(raw[8:8 + hlen])


def tensor(name):
    a, b = hdr[name]["data_offsets"]
    return np.frombuffer(raw[8 + hlen + a:8 + hlen + b], dtype="<f4").reshape(hdr[name]["shape"])


def bf16(t):
    return (np.frombuffer(base64.b64decode(t["data"]), dtype="<u2").astype(np.uint32) << 16).view(np.float32)


want_m, want_l = tensor("mean"), tensor("logvar")
worst = 0.0
for i, k in enumerate(sorted(crops)):
    for got, want in ((bf16(recs[k]["latent_mean"]), want_m[i]), (bf16(recs[k]["latent_logvar"]), want_l[i])):
        # bf16 keeps 8 bits of mantissa: within 2^-8 of each value
        d = float(np.max(np.abs(got - want.ravel()) / (np.abs(want.ravel()) + 1e-6)))
        worst = max(worst, d)
print(f"latents vs vae encode: max relative difference {worst:.2e} (bf16 rounding: 3.9e-03)")
c.check(worst <= 2 ** -8 + 1e-6, f"latents differ from vae encode: {worst}")

# A rerun adds nothing.
run("ingest", "encode", "--from", crops_dir, "--out", out, "--vae", vae, "--threads", "2", "--job", "enc1")
stats = json.load(open(f"{out}/ingest-jobs/enc1.encode.json"))
c.check(stats["succeeded"] == 0 and stats["skipped"] == good, f"rerun: {stats}")
c.check(json.load(open(f"{out}/manifest.json"))["records"] == good, "rerun: no record added")

# --from-prefix: one job's shards; --keep-crop keeps the crop; f32 latents.
out2 = f"{W}/final2"
run("ingest", "encode", "--from", crops_dir, "--from-prefix", "jobB-", "--out", out2, "--vae", vae, "--threads", "2",
    "--keep-crop", "--latent-dtype", "f32")
recs2 = {r["key"]: r for r in map(json.loads, run("shards", "cat", out2).stdout.decode().splitlines())}
c.check(sorted(recs2) == sorted(r["key"] for r in records[6:]), f"--from-prefix jobB-: {sorted(recs2)}")
c.check(all(recs2[r["key"]].get("image") == r["image"] for r in records[6:]), "--keep-crop keeps the crop as it was")
stats = json.load(open(f"{out2}/ingest-jobs/crops.encode.json"))
c.check(stats["failures"] == {"bad_crop": 2}, f"jobB: {stats}")
k6 = records[6]["key"]
got = np.frombuffer(base64.b64decode(recs2[k6]["latent_mean"]["data"]), dtype="<f4")
c.check(float(np.max(np.abs(got - want_m[6].ravel()))) <= 1e-5 * (1 + float(np.max(np.abs(want_m[6])))),
        "f32 latents equal vae encode")

# Topic to topic (and a folder) on the embedded broker.
with Broker(T, W, "crops:2", "latents:2") as broker:
    bs = broker.bootstrap
    run("shards", "publish", crops_dir, "--to", f"kafka://{bs}/crops")
    # the folder first (as if a kill came between the two outputs), then both: each output gets every key once
    run("ingest", "encode", "--from", f"kafka://{bs}/crops", "--out", f"{W}/final3", "--vae", vae, "--threads", "2",
        "--job", "topic")
    for attempt in range(2):
        run("ingest", "encode", "--from", f"kafka://{bs}/crops", "--to", f"kafka://{bs}/latents", "--out", f"{W}/final3",
            "--vae", vae, "--threads", "2", "--job", "topic")
        stats = json.load(open(f"{W}/final3/ingest-jobs/topic.encode.json"))
        want = (good, 0) if attempt == 0 else (0, good)
        c.check((stats["succeeded"], stats["skipped"]) == want, f"topic run {attempt}: {stats}, wanted {want}")
    c.check(json.load(open(f"{W}/final3/manifest.json"))["records"] == good, "the folder got nothing twice")
    p = run("shards", "verify", f"kafka://{bs}/latents")
    keys = [json.loads(l)["key"] for l in run("shards", "cat", f"kafka://{bs}/latents").stdout.decode().splitlines()]
    c.check(sorted(keys) == sorted(r["key"] for r in records), f"topic: every key once: {sorted(keys)}")

# SIGINT mid-run: exit 130, the finished shards kept, no stats file; a rerun completes it.
out4 = f"{W}/stopped"
argv = [T, "ingest", "encode", "--from", crops_dir, "--out", out4, "--vae", SD_VAE, "--threads", "1", "--batch", "1",
        "--shard-records", "1", "--job", "stop"]
p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wait_for(c, lambda: records_in(out4) >= 1 or p.poll() is not None, "the first shard")
p.send_signal(signal.SIGINT)
_, err = p.communicate(timeout=120)
c.check(p.returncode == 130, f"SIGINT: exit {p.returncode}, wanted 130: {err.decode()[-1500:]}")
at_stop = records_in(out4)
c.check(0 < at_stop < good, f"stopped mid-run: {at_stop} of {good} records")
c.check(not os.path.exists(f"{out4}/ingest-jobs/stop.encode.json"), "a stopped job writes no stats file")
run("ingest", "encode", *argv[3:])
exactly_once(c, keys_of(T, out4), [r["key"] for r in records], "stopped, then rerun")
st = json.load(open(f"{out4}/ingest-jobs/stop.encode.json"))
c.check((st["succeeded"], st["skipped"]) == (good - at_stop, at_stop), f"the rerun did only the rest: {st}")

# Bad command lines: nothing done.
run("ingest", "encode", "--out", f"{W}/x", "--vae", vae, code=2)
run("ingest", "encode", "--from", crops_dir, "--vae", vae, code=2)
run("ingest", "encode", "--from", crops_dir, "--out", f"{W}/x", code=2)
run("ingest", "encode", "--from", crops_dir, "--to", "kafka://127.0.0.1:1/t", "--vae", vae, code=2)
run("ingest", "encode", "--from", crops_dir, "--out", f"{W}/x", "--vae", vae, "--batch", "0", code=2)
run("ingest", "encode", "--from", crops_dir, "--out", f"{W}/x", "--vae", vae, "--bogus", code=2)
c.check(not os.path.exists(f"{W}/x"), "a bad command line writes nothing")
run("ingest", "encode", "--from", f"{W}/none", "--out", f"{W}/y", "--vae", vae, code=3)
c.finish()
