#!/usr/bin/env python3
"""Integration test of `transfuse shards`: import/cat round trip, ls/stat
JSON, verify on damaged datasets (problems at the right shard, record and
offset), usage errors, and interop: the TFRecord framing is checked by an
independent Python reader, and record payloads decode with protoc and with
Python's protobuf library to what `shards cat` prints."""
import argparse, base64, hashlib, json, os, random, shutil, struct, subprocess, sys, tempfile

ap = argparse.ArgumentParser()
ap.add_argument("--transfuse", required=True)
ap.add_argument("--proto-dir", required=True)
args = ap.parse_args()
T = args.transfuse
failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what, file=sys.stderr)


def run(*argv, stdin=None, ok=(0,)):
    p = subprocess.run([T, *argv], input=stdin, capture_output=True)
    if p.returncode not in ok:
        print(f"unexpected exit {p.returncode} from {argv}: {p.stderr.decode()}", file=sys.stderr)
    return p


# --- an independent TFRecord reader ---
CRC_TABLE = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    CRC_TABLE.append(c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = (c >> 8) ^ CRC_TABLE[(c ^ b) & 0xFF]
    return c ^ 0xFFFFFFFF


def masked(c):
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecords(path):
    """(offset, payload) for each record; raises on any framing error."""
    data = open(path, "rb").read()
    off, out = 0, []
    while off < len(data):
        (n,) = struct.unpack_from("<Q", data, off)
        (lc,) = struct.unpack_from("<I", data, off + 8)
        assert lc == masked(crc32c(data[off:off + 8])), f"length crc at {off}"
        payload = data[off + 12:off + 12 + n]
        (pc,) = struct.unpack_from("<I", data, off + 12 + n)
        assert pc == masked(crc32c(payload)), f"payload crc at {off}"
        out.append((off, payload))
        off += 16 + n
    return out


def b64(b):
    return base64.b64encode(b).decode()


def make_records(n, seed=3):
    rnd = random.Random(seed)
    recs = []
    scripts = ["a red bicycle", "東京の夜景", "قطة على السطح", "Ёлка зимой", "🐱‍👤 ninja cat", "e\u0301cole"]
    for i in range(n):
        raw = bytes(rnd.getrandbits(8) for _ in range(64))
        r = {
            "key": f"https://img.example/{i:05d}",
            "caption": f"{scripts[i % len(scripts)]} #{i}",
            "tokens": [128000] + [rnd.randrange(128256) for _ in range(rnd.randrange(1, 60))],
            "latent_mean": {"dtype": "DTYPE_BF16", "shape": [4, 8, 8], "data": b64(bytes(rnd.getrandbits(8) for _ in range(512)))},
            "provenance": {
                "source_url": f"https://host{i % 5}.example/img/{i}.jpg",
                "sha256": b64(hashlib.sha256(raw).digest()),
                "original_width": 300 + i, "original_height": 400,
                "crop": {"x": 1, "y": 72 + i % 3, "width": 300 + i, "height": 300 + i},
                "exif_orientation": 1 + i % 8, "original_format": ["jpeg", "png", "webp"][i % 3],
            },
            "extra": {"license": "cc-by-4.0", "row": str(i)},
        }
        if i % 2:
            r["latent_logvar"] = {"dtype": "DTYPE_BF16", "shape": [4, 8, 8],
                                  "data": b64(bytes(rnd.getrandbits(8) for _ in range(512)))}
        if i % 7 == 0:
            r["image"] = {"format": "png", "width": 256, "height": 256, "data": b64(raw)}
        recs.append(r)
    return recs


tmp = tempfile.mkdtemp(prefix="tf_cli_")
try:
    ds = os.path.join(tmp, "ds")
    recs = make_records(1000)
    lines = "".join(json.dumps(r) + "\n" for r in recs).encode()
    p = run("shards", "import", "--out", ds, "--shard-records", "300", "--tokenizer-id", "tok1", stdin=lines)
    check(p.returncode == 0, "import exit 0")

    # cat prints back exactly what went in, in order.
    p = run("shards", "cat", ds)
    got = [json.loads(l) for l in p.stdout.decode().splitlines()]
    check(len(got) == len(recs), f"cat printed {len(got)} records")
    check(got == recs, "cat output equals import input")

    # ls --json from manifest and indexes.
    ls = json.loads(run("shards", "ls", "--json", ds).stdout)
    check(ls["shards"] == 4 and ls["records"] == 1000, f"ls counts {ls['shards']} {ls['records']}")
    check(all(s["state"] == "ok" for s in ls["list"]), "ls states ok")
    manifest = json.load(open(os.path.join(ds, "manifest.json")))
    check(manifest["facts"]["tokenizer"]["id"] == "tok1", "tokenizer id in manifest")
    check(manifest["facts"]["latent"] == {"dtype": "bf16", "shape": [4, 8, 8]}, "latent facts from first record")

    # Independent framing check of every shard, its index, and its checksum.
    all_payloads = []
    for s in manifest["shards"]:
        path = os.path.join(ds, s["name"])
        frames = tfrecords(path)
        check(len(frames) == s["records"], f"{s['name']}: {len(frames)} frames")
        check(crc32c(open(path, "rb").read()) == int(s["crc32c"], 16), f"{s['name']}: file crc")
        idx = open(path + ".idx", "rb").read()
        check(idx[:8] == b"TFSIDX01" and struct.unpack_from("<Q", idx, 8)[0] == len(frames), "index header")
        offs = [struct.unpack_from("<Q", idx, 16 + 16 * k)[0] for k in range(len(frames))]
        check(offs == [o for o, _ in frames], f"{s['name']}: index offsets")
        all_payloads += [pl for _, pl in frames]

    # stat --json agrees with what Python computes.
    st = json.loads(run("shards", "stat", "--json", ds).stdout)
    check(st["records"] == 1000, "stat records")
    ntok = sorted(len(r["tokens"]) for r in recs)
    check(st["tokens"]["max"] == ntok[-1] and st["tokens"]["min"] == ntok[0], "stat token range")
    check(st["provenance"]["distinct_hosts"] == 5, "stat hosts")
    check(st["latent_mean"] == {"bf16 [4,8,8]": 1000}, f"stat latent {st['latent_mean']}")

    # --index, --key, --fields.
    one = json.loads(run("shards", "cat", ds, "--index", "777").stdout)
    check(one == recs[777], "cat --index across shards")
    one = json.loads(run("shards", "cat", ds, "--key", recs[123]["key"], "--fields", "key,caption").stdout)
    check(one == {"key": recs[123]["key"], "caption": recs[123]["caption"]}, "cat --key --fields")

    # Interop: protoc decodes the raw payload; Python's protobuf decodes it
    # to the same JSON that cat prints.
    raw = run("shards", "cat", ds, "--index", "7", "--raw").stdout
    check(raw == all_payloads[7], "--raw is the record payload")
    proto = os.path.join(args.proto_dir, "transfuse.proto")
    text = subprocess.run(["protoc", "--decode", "transfuse.v1.Sample", f"--proto_path={args.proto_dir}", proto],
                          input=raw, capture_output=True)
    check(text.returncode == 0, "protoc --decode succeeds: " + text.stderr.decode())
    check(f'key: "{recs[7]["key"]}"' in text.stdout.decode(), "protoc output shows the key")
    desc = os.path.join(tmp, "d.pb")
    subprocess.run(["protoc", f"--proto_path={args.proto_dir}", f"--descriptor_set_out={desc}", proto], check=True)
    from google.protobuf import descriptor_pb2, descriptor_pool, json_format
    try:
        from google.protobuf.message_factory import GetMessageClass
    except ImportError:
        from google.protobuf import message_factory
        GetMessageClass = lambda d: message_factory.MessageFactory().GetPrototype(d)
    fds = descriptor_pb2.FileDescriptorSet.FromString(open(desc, "rb").read())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    Sample = GetMessageClass(pool.FindMessageTypeByName("transfuse.v1.Sample"))
    mismatch = 0
    for i, pl in enumerate(all_payloads):
        m = Sample.FromString(pl)
        if json_format.MessageToDict(m, preserving_proto_field_name=True) != recs[i]:
            mismatch += 1
    check(mismatch == 0, f"python protobuf decodes {mismatch} records differently")
    # And the other direction: what python protobuf encodes, cat reads.
    m = json_format.ParseDict(recs[3], Sample())
    one_dir = os.path.join(tmp, "py")
    os.makedirs(one_dir)
    body = m.SerializeToString()
    with open(os.path.join(one_dir, "x.tfrecord"), "wb") as f:
        f.write(struct.pack("<Q", len(body)) + struct.pack("<I", masked(crc32c(struct.pack("<Q", len(body))))))
        f.write(body + struct.pack("<I", masked(crc32c(body))))
    got = json.loads(run("shards", "cat", os.path.join(one_dir, "x.tfrecord")).stdout)
    check(got == recs[3], "cat reads a TFRecord written by Python")

    check(run("shards", "verify", ds).returncode == 0, "verify clean dataset")

    def damaged_copy():
        d = os.path.join(tmp, "dmg")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(ds, d)
        return d

    # Flipped payload byte: reported at its shard, record and offset.
    d = damaged_copy()
    s1 = os.path.join(d, "shard-000001.tfrecord")
    offs = [o for o, _ in tfrecords(s1)]
    with open(s1, "r+b") as f:
        f.seek(offs[42] + 30)
        b = f.read(1)
        f.seek(offs[42] + 30)
        f.write(bytes([b[0] ^ 1]))
    p = run("shards", "verify", d, ok=(1,))
    out = p.stdout.decode()
    check(p.returncode == 1, "verify exit 1 on damage")
    check(f"PROBLEM shard-000001.tfrecord: record 42 at byte {offs[42]}: payload CRC mismatch" in out,
          "payload damage located: " + out)
    check("file CRC-32C" in out, "whole-file checksum mismatch reported")
    cat = run("shards", "cat", d, ok=(1,))
    check(len(cat.stdout.decode().splitlines()) == 999, "cat skips only the damaged record")
    check(f"record 42 at byte {offs[42]}" in cat.stderr.decode(), "cat reports the damaged record")
    vj = json.loads(run("shards", "verify", "--json", d, ok=(1,)).stdout)
    check(not vj["ok"] and {"shard": "shard-000001.tfrecord", "record": 42, "offset": offs[42],
                            "what": "payload CRC mismatch"} in vj["problems"], "verify --json problem")

    # Truncated tail of the last shard.
    d = damaged_copy()
    last = os.path.join(d, "shard-000003.tfrecord")
    offs = [o for o, _ in tfrecords(last)]
    os.truncate(last, offs[-1] + 7)
    out = run("shards", "verify", d, ok=(1,)).stdout.decode()
    check(f"record {len(offs) - 1} at byte {offs[-1]}: truncated" in out, "truncation located: " + out)

    # Missing index: ls says so, verify reports it, reading still works.
    d = damaged_copy()
    os.unlink(os.path.join(d, "shard-000002.tfrecord.idx"))
    ls = json.loads(run("shards", "ls", "--json", d, ok=(1,)).stdout)
    check(ls["list"][2]["state"] == "index missing", f"ls state {ls['list'][2]['state']}")
    check("index missing" in run("shards", "verify", d, ok=(1,)).stdout.decode(), "verify: index missing")
    check(len(run("shards", "cat", d).stdout.decode().splitlines()) == 1000, "cat without an index")

    # A manifest that disagrees.
    d = damaged_copy()
    mf = json.load(open(os.path.join(d, "manifest.json")))
    mf["shards"][0]["records"] += 1
    json.dump(mf, open(os.path.join(d, "manifest.json"), "w"))
    out = run("shards", "verify", d, ok=(1,)).stdout.decode()
    check("shard holds 300 records, manifest says 301" in out, "manifest count mismatch: " + out)
    # A shard the manifest does not list.
    shutil.copy(os.path.join(d, "shard-000000.tfrecord"), os.path.join(d, "shard-000009.tfrecord"))
    check("shard-000009.tfrecord: record 0 at byte 0: shard file is not listed" in
          run("shards", "verify", d, ok=(1,)).stdout.decode(), "unlisted shard reported")

    # Import: bad lines are reported with their number and skipped.
    bad = (json.dumps(recs[0]) + "\n{not json\n" + json.dumps({"caption": "no key"}) + "\n" +
           json.dumps({"key": "x", "colour": 1}) + "\n" +
           json.dumps({"key": "y", "latent_mean": {"dtype": "DTYPE_F32", "shape": [2], "data": "AAAA"}}) + "\n" +
           json.dumps(recs[1]) + "\n").encode()
    p = run("shards", "import", "--out", os.path.join(tmp, "bad"), stdin=bad, ok=(1,))
    err = p.stderr.decode()
    check(p.returncode == 1 and "line 2:" in err and "line 3: record has no \"key\"" in err and
          "line 4:" in err and "no field named 'colour'" in err and "line 5: latent_mean" in err, err)
    check(len(run("shards", "cat", os.path.join(tmp, "bad")).stdout.splitlines()) == 2, "good lines imported")
    p = run("shards", "import", "--strict", "--out", os.path.join(tmp, "strict"), stdin=bad, ok=(1,))
    check(not os.path.exists(os.path.join(tmp, "strict", "shard-000000.tfrecord")), "--strict publishes nothing")
    # Appending with other facts is refused.
    p = run("shards", "import", "--out", ds, "--tokenizer-id", "other", stdin=lines[:200], ok=(3,))
    check(p.returncode == 3 and "tokenizer differs" in p.stderr.decode(), "facts mismatch refused (exit 3)")
    # A path that cannot be read is exit 3; options after the operand and
    # --opt=value work.
    check(run("shards", "verify", os.path.join(tmp, "nothing"), ok=(3,)).returncode == 3, "verify of nothing: 3")
    check(len(run("shards", "cat", ds, "--limit=3", "--fields=key").stdout.splitlines()) == 3, "--opt=value")
    # One rank's share: the two ranks' blocks are the dataset, in order.
    parts = [[json.loads(l)["key"] for l in run("shards", "cat", ds, "--fields", "key", "--rank", str(r), "--world",
                                               "2", "--split", "blocks").stdout.splitlines()] for r in (0, 1)]
    check(parts[0] + parts[1] == [r["key"] for r in recs] and abs(len(parts[0]) - len(parts[1])) <= 1,
          "cat --rank/--world --split blocks")
    meta = json.loads(run("shards", "cat", ds, "--meta", "--fields", "key", "--limit", "1").stdout)
    check(meta == {"key": recs[0]["key"], "_shard": "shard-000000.tfrecord", "_record": 0}, f"cat --meta {meta}")

    # Usage errors exit 2 before any work; --help exits 0.
    for argv in (["shards", "cat", ds, "--index", "abc"], ["shards", "import"], ["shards", "frob"],
                 ["shards", "ls"], ["shards", "cat", ds, "--raw"], ["shards", "cat", ds, "--fields", "nope"],
                 ["shards", "import", "--out", ds, "--shard-size", "12Q"], ["nonsense"]):
        check(run(*argv, ok=(2,)).returncode == 2, f"usage error for {argv}")
    for argv in (["--help"], ["shards", "--help"], ["shards", "verify", "--help"], ["--version"]):
        check(run(*argv).returncode == 0 and run(*argv).stdout, f"help for {argv}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

print(f"test_shards_cli: {'FAILED' if failures else 'all checks passed'} ({failures} failures)")
sys.exit(1 if failures else 0)
