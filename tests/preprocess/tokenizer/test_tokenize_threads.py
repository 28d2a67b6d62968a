#!/usr/bin/env python3
"""`transfuse tokenize --threads N` gives the same lines, in input order, as
one thread, over several batches (8192 lines each) of mixed text; and the
same for --decode. Small enough to run in the ThreadSanitizer build (label
tsan), where it checks the CLI's worker threads.

usage: test_tokenize_threads.py TRANSFUSE TOKENIZER_JSON"""
import os, random, subprocess, sys

T, TOK = sys.argv[1], sys.argv[2]
if not os.path.exists(TOK):
    print(f"skipped: {TOK} is missing (the tokenizer_fetch_reference fixture did not run)")
    sys.exit(77)
random.seed(7)
words = ["cat", "The", "a", "Ünïcödé", "東京", "🐱", "12345", "don't", "  spaces", "tabs\t", "x" * 40, "<|eot_id|>",
         "\ufeff", "naïve café", "ſ's", "\x00", "\xff"]
lines = [" ".join(random.choice(words) for _ in range(random.randint(0, 20))) for _ in range(20000)]
text = "".join(l + "\n" for l in lines).encode("utf-8", "surrogateescape")
failures = 0


def tokenize(*args, data):
    p = subprocess.run([T, "tokenize", "--tokenizer", TOK, *args], input=data, capture_output=True)
    if p.returncode != 0:
        print(f"exit {p.returncode} from tokenize {args}: {p.stderr.decode()[-2000:]}", file=sys.stderr)
    return p.returncode, p.stdout


rc1, one = tokenize("--bos", data=text)
for args in (["--threads", "3", "--bos"], ["--bos", "--threads=0"]):
    rc, many = tokenize(*args, data=text)
    same = rc == 0 and many == one
    print(f"encode {' '.join(args)}: {'same' if same else 'DIFFERENT'} ({len(many.splitlines())} lines)")
    failures += not same
check_lines = rc1 == 0 and len(one.splitlines()) == len(lines)
failures += not check_lines
rc_d1, dec1 = tokenize("--decode", data=one)
rc_d3, dec3 = tokenize("--decode", "--threads", "3", data=one)
same = rc_d1 == 0 and rc_d3 == 0 and dec1 == dec3 and len(dec3.splitlines()) == len(lines)
print(f"decode --threads 3: {'same' if same else 'DIFFERENT'}")
failures += not same
print(f"test_tokenize_threads: {'FAILED' if failures else 'all checks passed'} ({failures} failures)")
sys.exit(1 if failures else 0)
