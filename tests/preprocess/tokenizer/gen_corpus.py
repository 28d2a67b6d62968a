#!/usr/bin/env python3
"""gen_corpus.py: the tokenizer test corpus, generated deterministically.

Writes OUT_DIR/corpus.jsonl (one JSON string per line, N items, default
20,000) and OUT_DIR/invalid.txt (raw byte lines, many not valid UTF-8).
The items cover what image captions contain: English captions, other
scripts (CJK, Arabic, Hindi, Cyrillic, Greek, Thai), emoji with skin tones,
ZWJ sequences, flags and keycaps, combining marks, numbers of every length
and kind, punctuation runs, contractions in odd cases, whitespace of every
kind (tabs, CR/LF, NBSP, U+3000, U+2028, U+FEFF...), very long words, HTML
fragments and special-token text.

Characters are drawn only from Unicode 14 letters and numbers, so the PCRE2
tables (Unicode 14) and node's (Unicode 15.1) agree on every \\p{L}/\\p{N}.

    gen_corpus.py OUT_DIR [N] [--captions]

--captions writes only English caption-like lines (the benchmark's
second corpus, closer to what LAION-style captions look like).
"""
import json
import os
import random
import sys

R = random.Random(20241123)

WORDS = ("a the of and with on in at by for from to over under near beside dog cat man woman child "
         "people group bird horse car bus train bicycle street road city building house tree trees "
         "flower flowers field grass beach sea ocean wave sky cloud clouds sunset sunrise mountain "
         "snow river lake boat table chair plate food pizza cake coffee cup glass window door wall "
         "red blue green yellow black white orange purple brown gray pink golden small large tall "
         "old young happy smiling running walking sitting standing holding looking playing eating "
         "photo picture image illustration painting drawing close-up view portrait landscape vintage "
         "modern abstract colorful beautiful cute stock vector isolated background texture pattern "
         "logo icon design art 3d render 4k hd wallpaper t-shirt poster banner card sale free new").split()
TAIL = [".", "", "!", "...", " .", "?", ";", " -", ",", "!!", " :)", "\u2026"]


def choice(xs):
    return xs[R.randrange(len(xs))]


def rand_chars(ranges, n):
    out = []
    for _ in range(n):
        lo, hi = choice(ranges)
        out.append(chr(R.randint(lo, hi)))
    return "".join(out)


def english():
    n = R.randint(3, 25)
    words = [choice(WORDS) for _ in range(n)]
    for i in range(len(words)):
        r = R.random()
        if r < 0.08:
            words[i] = words[i].capitalize()
        elif r < 0.10:
            words[i] = words[i].upper()
        elif r < 0.13:
            words[i] += ","
    s = " ".join(words)
    return s[0].upper() + s[1:] + choice(TAIL)


CJK = [(0x4E00, 0x9FA5), (0x3041, 0x3096), (0x30A1, 0x30FA), (0xAC00, 0xD7A3)]
CJK_PUNCT = "\u3002\uff0c\u3001\u300c\u300d\uff01\uff1f\u30fb\uff08\uff09"


def cjk():
    parts = []
    for _ in range(R.randint(1, 6)):
        parts.append(rand_chars([choice(CJK)], R.randint(1, 12)))
        parts.append(choice(CJK_PUNCT + " " + "" * 3))
    if R.random() < 0.3:
        parts.insert(R.randrange(len(parts)), " " + choice(WORDS) + " ")
    if R.random() < 0.2:
        parts.append(str(R.randint(0, 99999)))
    return "".join(parts)


ARABIC = [(0x0621, 0x063A), (0x0641, 0x064A)]
ARABIC_MARKS = [(0x064B, 0x0652)]


def arabic():
    words = []
    for _ in range(R.randint(1, 10)):
        w = ""
        for _ in range(R.randint(2, 8)):
            w += rand_chars(ARABIC, 1)
            if R.random() < 0.3:
                w += rand_chars(ARABIC_MARKS, 1)
        words.append(w)
    s = " ".join(words)
    if R.random() < 0.3:
        s += " " + "".join(chr(0x0660 + R.randint(0, 9)) for _ in range(R.randint(1, 6)))
    return s + choice(["", "\u061f", "\u060c", ".", "\u06d4"])


def hindi():
    words = []
    for _ in range(R.randint(1, 10)):
        w = ""
        for _ in range(R.randint(1, 5)):
            w += chr(R.randint(0x0915, 0x0939))
            r = R.random()
            if r < 0.4:
                w += chr(R.randint(0x093E, 0x094C))
            elif r < 0.5:
                w += "\u094d"
            if R.random() < 0.1:
                w += choice(["\u0902", "\u0901", "\u093c"])
        words.append(w)
    s = " ".join(words)
    if R.random() < 0.3:
        s += " " + "".join(chr(0x0966 + R.randint(0, 9)) for _ in range(R.randint(1, 5)))
    return s + choice(["\u0964", "", ".", " \u0965"])


def cyrillic_greek():
    ranges = choice([[(0x0430, 0x044F)], [(0x0410, 0x042F), (0x0430, 0x044F)], [(0x03B1, 0x03C9)],
                     [(0x0391, 0x03A1), (0x03B1, 0x03C9)], [(0x0E01, 0x0E2E), (0x0E30, 0x0E3A)]])
    words = [rand_chars(ranges, R.randint(1, 12)) for _ in range(R.randint(1, 12))]
    return " ".join(words) + choice(TAIL)


ZWJ = "\u200d"
FACES = [(0x1F600, 0x1F64F)]
THINGS = [(0x1F300, 0x1F5FF), (0x1F680, 0x1F6C5), (0x2600, 0x26FF), (0x1F900, 0x1F9FF)]
SKIN = [chr(c) for c in range(0x1F3FB, 0x1F400)]
PEOPLE = ["\U0001F468", "\U0001F469", "\U0001F467", "\U0001F466", "\U0001F9D1"]


def emoji_seq():
    r = R.random()
    if r < 0.25:
        return ZWJ.join(choice(PEOPLE) + (choice(SKIN) if R.random() < 0.3 else "") for _ in range(R.randint(2, 4)))
    if r < 0.4:
        return choice(["\U0001F3F3\ufe0f\u200d\U0001F308", "\U0001F3F4\u200d\u2620\ufe0f",
                       "\u2764\ufe0f\u200d\U0001F525", "\U0001F441\ufe0f\u200d\U0001F5E8\ufe0f",
                       "\U0001F9D1\u200d\U0001F4BB", "\U0001F469\u200d\u2764\ufe0f\u200d\U0001F468"])
    if r < 0.55:
        return "".join(chr(0x1F1E6 + R.randint(0, 25)) for _ in range(2))
    if r < 0.65:
        return choice("0123456789#*") + "\ufe0f\u20e3"
    if r < 0.8:
        return rand_chars(FACES, 1) + (choice(SKIN) if R.random() < 0.5 else "")
    return rand_chars(THINGS, R.randint(1, 3)) + ("\ufe0f" if R.random() < 0.3 else "")


def emoji():
    parts = []
    for _ in range(R.randint(1, 8)):
        if R.random() < 0.5:
            parts.append(choice(WORDS))
        parts.append(emoji_seq())
    return choice(["", " "]).join(parts)


def combining():
    words = []
    for _ in range(R.randint(1, 8)):
        w = ""
        for _ in range(R.randint(1, 8)):
            w += choice("aeiouyncsAEIOUZ")
            for _ in range(R.choice([0, 0, 1, 1, 2, 3])):
                w += chr(R.randint(0x0300, 0x036F))
        words.append(w)
    if R.random() < 0.3:  # zalgo
        words.append("".join(c + "".join(chr(R.randint(0x0300, 0x036F)) for _ in range(R.randint(3, 12)))
                             for c in "zalgo"))
    if R.random() < 0.3:
        words.append("e\u0301\u0327 \u0301start n\u0303o\u0308")
    return " ".join(words)


def number():
    r = R.random()
    n = R.randint(1, 40)
    digits = "".join(str(R.randint(0, 9)) for _ in range(n))
    if r < 0.2:
        return digits
    if r < 0.35:
        return f"{R.randint(0, 10**R.randint(1, 12)):,}"
    if r < 0.45:
        return f"{R.uniform(-1e6, 1e6):.{R.randint(0, 8)}f}"
    if r < 0.55:
        return choice(["$", "\u20ac", "\u00a3", "\u00a5", "#", "No.", "v"]) + digits[:R.randint(1, 10)]
    if r < 0.65:
        return "".join(chr(0xFF10 + int(d)) for d in digits[:12])  # fullwidth
    if r < 0.72:
        return choice(["\u00bd", "\u00b2", "\u00b3", "\u2153", "\u216b", "\u2163", "\u2460", "\u2089", "x\u00b2+y\u00b2"])
    if r < 0.8:
        return f"{R.randint(1, 31)}/{R.randint(1, 12)}/{R.randint(1900, 2030)} {R.randint(0, 23)}:{R.randint(0, 59):02d}"
    if r < 0.9:
        return f"{R.randint(100, 4000)}x{R.randint(100, 4000)}px {R.randint(1, 999)}mm f/{R.randint(1, 22)}"
    return digits + choice(WORDS) + digits[:3]


def numbers_line():
    return " ".join(number() for _ in range(R.randint(1, 8)))


PUNCT = list("!?.,;:-_=+*/\\|@#$%^&~`'\"()[]{}<>") + ["\u2026", "\u2014", "\u2013", "\u00bf", "\u00a1", "\u201c",
                                                       "\u201d", "\u2018", "\u2019", "\u00ab", "\u00bb", "\u2022"]


def punctuation():
    parts = []
    for _ in range(R.randint(1, 8)):
        parts.append("".join(choice(PUNCT) for _ in range(R.randint(1, 12))))
        if R.random() < 0.5:
            parts.append(choice(WORDS))
        if R.random() < 0.2:
            parts.append(choice(["\n", "\r\n", "\n\n", "\r"]))
    return choice(["", " "]).join(parts)


CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Re", "'rE", "'VE", "'Ve", "'vE",
                "'M", "'LL", "'Ll", "'lL", "'D", "\u2019s", "\u2019ll", "'\u017f", "'\u212a", "''s", "'", "'x"]


def contractions():
    parts = []
    for _ in range(R.randint(1, 8)):
        w = choice(["it", "IT", "he", "They", "WE", "you", "I", "don", "can", "won", "Y", "O", "rock n", "", " ",
                    "123", "\u00e9t\u00e9"])
        parts.append(w + choice(CONTRACTIONS) + choice(["", "", "s", "ing", " ", "'", "!"]))
    return choice([" ", "", "  "]).join(parts)


SPACES = [" ", "  ", "   ", "\t", "\t\t", " \t ", "\n", "\r\n", "\r", "\n\n\n", " \n ", "\u00a0", "\u3000",
          "\u2028", "\u2029", "\u0085", "\ufeff", "\u200b", "\u180e", "\u1680", "\u2003", "\u202f", "\u205f",
          "\x0b", "\x0c", "\x1c", "\x1f", "\x00", " \u00a0 ", "\u2009\u2009"]


def whitespace():
    parts = []
    for _ in range(R.randint(1, 10)):
        if R.random() < 0.6:
            parts.append(choice(WORDS + ["1", "22", "!", "\u4e2d", "\u0434\u0430"]))
        parts.append("".join(choice(SPACES) for _ in range(R.randint(1, 3))))
    s = "".join(parts)
    if R.random() < 0.3:
        s = choice(SPACES) + s
    return s


def long_word():
    r = R.random()
    n = R.choice([50, 97, 100, 129, 200, 500, 1000, 3000])
    if r < 0.2:
        return choice("aAzeE") * n
    if r < 0.4:
        return "".join(choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))
    if r < 0.5:
        return "https://example.com/" + "/".join(choice(WORDS) for _ in range(n // 8)) + "?q=" + "%2F" * 20
    if r < 0.6:
        return "".join(str(R.randint(0, 9)) for _ in range(n))
    if r < 0.7:
        return rand_chars([(0x4E00, 0x9FA5)], n // 3)
    if r < 0.8:
        return " " * n + choice(WORDS) + "\t" * (n // 10)
    if r < 0.9:
        return "".join(emoji_seq() for _ in range(n // 20))
    return choice(["ab", "xyz", "\u00e9", "!?", "0a"]) * (n // 2)


HTML = ['<a href="https://example.com/p?id={n}&amp;ref=img">{w}</a>', "<div class='caption'>{w} {n}</div>",
        "<img src=\"/img/{n}.jpg\" alt=\"{w}\"/>", "&lt;b&gt;{w}&lt;/b&gt; &amp; &nbsp;&#x27;{w}&#39;",
        "<p>{w}<br>{w}</p>\n<!-- {n} -->", "<script>var x = {n};</script>", "<span style=\"color:#ff{n}\">{w}</span>",
        "[img]{w}[/img] {{{{{w}}}}} ${{{n}}}", "<|begin_of_text|>{w}", "{w}<|end_of_text|>",
        "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{w}", "<|reserved_special_token_{n}|>",
        "<|begin_of_text{w}", "<|<|eot_id|>|>", "<|reserved_special_token_250|><|reserved_special_token_251|>",
        "<s>{w}</s> <unk> [CLS] {w} [SEP]"]


def html():
    return "".join(choice(HTML).format(w=choice(WORDS), n=R.randint(0, 300)) for _ in range(R.randint(1, 4)))


MIXED = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF), (0x600, 0x6FF),
         (0x900, 0x97F), (0xE00, 0xE5B), (0x1E00, 0x1EFF), (0x2000, 0x206F), (0x20A0, 0x20C0), (0x2100, 0x218B),
         (0x2190, 0x23FF), (0x2460, 0x24FF), (0x2500, 0x27BF), (0x3000, 0x303F), (0x3040, 0x30FF),
         (0x4E00, 0x9FA5), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF), (0x1F300, 0x1F64F), (0x1D400, 0x1D7FF),
         (0x10000, 0x1007F), (0xE000, 0xE0FF), (0x0, 0x1F)]


def mixed():
    return rand_chars(MIXED, R.randint(1, 80))


def caption_mix():
    return " ".join(choice(GENERATORS[:-1])() for _ in range(R.randint(2, 3)))


GENERATORS = [english, english, english, english, cjk, arabic, hindi, cyrillic_greek, emoji, combining,
              numbers_line, punctuation, contractions, whitespace, long_word, html, mixed, caption_mix]

FIXED = ["", " ", "  ", "\n", "\t", "a", "'s", "'S", "'Ll", "'VE", "'ſ", "\ufeff", "\ufeffHello", "\u0085",
         "Hello, my dog is cute", "<|begin_of_text|>", "<|begin_of_text|><|begin_of_text|>", "  leading",
         "trailing  ", "don't DON'T Don'T", "1234567", "\x00", "a\x00b", "\u00e9\u0301", "\U0001F468\u200d\U0001F469\u200d\U0001F467",
         "x" * 5000, " " * 3000 + "x", "\n" * 100, "\r\n" * 50, "\u3000" * 10 + "\u4e2d"]


def invalid_lines():
    """Raw lines of bytes: valid text with invalid UTF-8 spliced in."""
    bad = [b"\xff", b"\xfe", b"\xc0\xaf", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80",
           b"\x80", b"\xbf\xbf", b"\xc3", b"\xe4\xb8", b"\xf0\x9f\x98", b"\xf0\x9f", b"\xc3\x28", b"\xe2\x82\x28",
           b"\xf0\x28\x8c\xbc", b"\xed\xbf\xbf", b"\xef\xbf\xbe", b"\xc1\xbf"]
    out = []
    for i in range(400):
        parts = []
        for _ in range(R.randint(1, 6)):
            if R.random() < 0.5:
                parts.append(choice(GENERATORS[:4] + [cjk, emoji])().replace("\n", " ").replace("\r", " ").encode())
            parts.append(b"".join(choice(bad) for _ in range(R.randint(1, 3))))
        out.append(b"".join(parts))
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    captions = "--captions" in sys.argv
    out_dir = args[0]
    n = int(args[1]) if len(args) > 1 else 20000
    os.makedirs(out_dir, exist_ok=True)
    items = [] if captions else list(FIXED)
    while len(items) < n:
        items.append(english() if captions else choice(GENERATORS)())
    with open(os.path.join(out_dir, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for s in items:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
        if not captions:
            # lone surrogates can only be written as escapes; node turns them
            # into U+FFFD when encoding to UTF-8
            for raw in ['"a\\ud800b"', '"\\udc00 x"', '"emoji \\ud83d"', '"\\ud83d\\ude00\\ude00"']:
                f.write(raw + "\n")
    with open(os.path.join(out_dir, "invalid.txt"), "wb") as f:
        for line in invalid_lines():
            f.write(line + b"\n")


if __name__ == "__main__":
    main()
