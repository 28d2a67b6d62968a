#!/usr/bin/env python3
"""Several writer processes into one dataset folder: N `transfuse shards
import --out DS` processes started together, each writing several shards of
distinct keys, repeated a few rounds into the same folder. Every key must be
present exactly once, the manifest must list every shard file once, and
`shards verify` must be clean. Also: verify catches a manifest entry whose
CRC or record count disagrees with the file, and a duplicate key."""
import argparse, json, os, shutil, subprocess, sys, tempfile

ap = argparse.ArgumentParser()
ap.add_argument("--transfuse", required=True)
ap.add_argument("--writers", type=int, default=4)
ap.add_argument("--records", type=int, default=2000)
ap.add_argument("--rounds", type=int, default=3)
args = ap.parse_args()
T = args.transfuse
failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what, file=sys.stderr)


def lines_for(tag, n):
    return "".join(json.dumps({"key": f"{tag}-{i:06d}", "caption": f"caption {tag} {i}"}) + "\n"
                   for i in range(n)).encode()


tmp = tempfile.mkdtemp(prefix="tf_writers_")
try:
    ds = os.path.join(tmp, "ds")
    expected = set()
    for rnd in range(args.rounds):
        # Start every writer before feeding any: they open the folder, then
        # all write and publish at once.
        procs, inputs = [], []
        for w in range(args.writers):
            tag = f"r{rnd}w{w}"
            data = lines_for(tag, args.records)
            expected.update(f"{tag}-{i:06d}" for i in range(args.records))
            p = subprocess.Popen([T, "shards", "import", "--out", ds, "--shard-records", "150"],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs.append(p)
            inputs.append(data)
        for p, data in zip(procs, inputs):
            p.stdin.write(data)
        for p in procs:
            p.stdin.close()
        for p in procs:
            err = p.stderr.read().decode()
            check(p.wait() == 0, f"round {rnd}: import exit {p.returncode}: {err}")
        keys = subprocess.run([T, "shards", "cat", "--fields", "key", ds], capture_output=True)
        got = [json.loads(l)["key"] for l in keys.stdout.decode().splitlines()]
        check(len(got) == len(expected), f"round {rnd}: {len(got)} records, expected {len(expected)}")
        check(set(got) == expected, f"round {rnd}: keys differ ({len(expected - set(got))} missing)")
        check(len(got) == len(set(got)), f"round {rnd}: {len(got) - len(set(got))} keys twice")
        v = subprocess.run([T, "shards", "verify", "--json", ds], capture_output=True)
        vj = json.loads(v.stdout or b"{}")
        check(v.returncode == 0 and vj.get("ok"), f"round {rnd}: verify: {v.stdout.decode()[:2000]}")
        m = json.load(open(os.path.join(ds, "manifest.json")))
        names = [s["name"] for s in m["shards"]]
        files = sorted(f for f in os.listdir(ds) if f.endswith(".tfrecord"))
        check(len(names) == len(set(names)), f"round {rnd}: manifest lists a shard twice")
        check(sorted(names) == files, f"round {rnd}: manifest and folder disagree")
        check(m["records"] == len(expected), f"round {rnd}: manifest total {m['records']}")
        check(not [f for f in os.listdir(ds) if ".tmp" in f], f"round {rnd}: temporary files left behind")

    # verify catches a manifest entry that disagrees with its file.
    def edited(change):
        d = os.path.join(tmp, "edit")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(ds, d)
        mf = json.load(open(os.path.join(d, "manifest.json")))
        change(mf["shards"][1])
        json.dump(mf, open(os.path.join(d, "manifest.json"), "w"))
        return d, mf["shards"][1]

    def flip_crc(e):
        e["crc32c"] = "%08x" % (int(e["crc32c"], 16) ^ 1)

    d, e = edited(flip_crc)
    v = subprocess.run([T, "shards", "verify", d], capture_output=True)
    check(v.returncode == 1 and f"{e['name']}: record 0 at byte 0: file CRC-32C" in v.stdout.decode(),
          "verify flags a manifest CRC that disagrees: " + v.stdout.decode())

    def add_record(e):
        e["records"] += 1

    d, e = edited(add_record)
    v = subprocess.run([T, "shards", "verify", d], capture_output=True)
    check(v.returncode == 1 and f"manifest says {e['records']}" in v.stdout.decode(),
          "verify flags a manifest count that disagrees: " + v.stdout.decode())

    # verify of a folder reports a key that appears twice.
    dup = os.path.join(tmp, "dup")
    two = lines_for("same", 3) + lines_for("same", 1)
    subprocess.run([T, "shards", "import", "--out", dup], input=two, capture_output=True)
    v = subprocess.run([T, "shards", "verify", dup], capture_output=True)
    out = v.stdout.decode()
    check(v.returncode == 1 and "key 'same-000000' appears more than once" in out,
          "verify flags a duplicate key: " + out)
finally:
    shutil.rmtree(tmp, ignore_errors=True)

print(f"test_shards_writers: {'FAILED' if failures else 'all checks passed'} ({failures} failures)")
sys.exit(1 if failures else 0)
