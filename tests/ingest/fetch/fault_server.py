#!/usr/bin/env python3
"""A small HTTP/1.1 server on loopback that misbehaves on request, for the
fetcher's tests. Threaded; keeps per-path counters so tests can assert what
the server saw (requests, the most in flight at once, arrival times).

Paths (NAME is a file of --corpus; query parameters as shown):
  /image/NAME[?ct=TYPE|ct=none]     the file, with its Content-Type, another one, or none
  /status/CODE                      that status, a short text body
  /slow/NAME?s=SECONDS              waits, then the file
  /hold/NAME?s=SECONDS              the file after a short wait, counting concurrency
  /retry-after/ID?n=K&v=V[&code=C]  the first K requests for ID get C (429) with
                                    Retry-After V ("date+N": an HTTP-date N s ahead), then the image
  /flaky/ID?n=K[&code=C]            the first K requests for ID get C (500), then the image
  /truncated/NAME                   Content-Length of the file + 10000, then only half of it
  /html[?ct=TYPE]                   an HTML page, by default labelled image/jpeg
  /empty                            200 with no body
  /redirect/N                       302 to /redirect/N-1; /redirect/0 is an image
  /loop/X                           /loop/a -> /loop/b -> /loop/a
  /to?u=URL[&code=C]                302 (or C) to URL
  /endless[?cl=N]                   a JPEG header then zeros for ever (Content-Length N if given)
  /robots/NAME?h=V[&h=V2...]        the file with one X-Robots-Tag header per h
  /stats                            JSON: {"max_in_flight": {path: n}, "requests": {path: n},
                                    "arrivals": {path: [t...]}, "bytes_sent": {path: n}}
  /reset                            clears the counters

usage: fault_server.py --corpus DIR [--addr 127.0.0.1] [--also 127.0.0.2]
Prints the port on stdout when listening; stops on SIGTERM.
"""
import argparse, email.utils, json, os, signal, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
STATE = {}


def reset():
    with LOCK:
        STATE.clear()
        STATE.update(requests={}, in_flight={}, max_in_flight={}, arrivals={}, bytes_sent={}, ids={})


reset()
TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    corpus = "."

    def log_message(self, *args):
        pass

    def send(self, code, body=b"", ctype="text/plain", headers=()):
        if code in (204, 304) or code < 200:
            body = b""  # these carry no body (a byte sent anyway would poison the connection)
        self.send_response(code)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def file(self, name):
        path = os.path.join(self.corpus, os.path.basename(name))
        with open(path, "rb") as f:
            return f.read(), TYPES.get(os.path.splitext(path)[1].lower(), "application/octet-stream")

    def first_of(self, key, n):
        with LOCK:
            seen = STATE["ids"].get(key, 0)
            STATE["ids"][key] = seen + 1
        return seen < n

    def do_GET(self):
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        parts = url.path.strip("/").split("/", 1)
        kind, arg = parts[0], parts[1] if len(parts) > 1 else ""
        with LOCK:
            STATE["requests"][kind] = STATE["requests"].get(kind, 0) + 1
            STATE["arrivals"].setdefault(kind, []).append(time.time())
            n = STATE["in_flight"].get(kind, 0) + 1
            STATE["in_flight"][kind] = n
            STATE["max_in_flight"][kind] = max(n, STATE["max_in_flight"].get(kind, 0))
        try:
            getattr(self, "page_" + kind.replace("-", "_"), self.page_missing)(arg, q)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with LOCK:
                STATE["in_flight"][kind] = STATE["in_flight"].get(kind, 1) - 1

    def page_missing(self, arg, q):
        self.send(404, b"no such page\n")

    def page_image(self, arg, q):
        body, ctype = self.file(arg)
        ct = q.get("ct", [ctype])[0]
        self.send(200, body, None if ct == "none" else ct)

    def page_status(self, arg, q):
        self.send(int(arg), b"status %s\n" % arg.encode())

    def page_slow(self, arg, q):
        time.sleep(float(q.get("s", ["5"])[0]))
        self.page_image(arg, {})

    def page_hold(self, arg, q):
        time.sleep(float(q.get("s", ["0.2"])[0]))
        self.page_image(arg, {})

    def page_retry_after(self, arg, q):
        n, code = int(q.get("n", ["1"])[0]), int(q.get("code", ["429"])[0])
        v = q.get("v", ["1"])[0]
        if v.startswith("date+"):
            v = email.utils.formatdate(time.time() + float(v[5:]), usegmt=True)
        if self.first_of("retry-after/" + arg, n):
            self.send(code, b"slow down\n", headers=[("Retry-After", v)])
        else:
            self.page_image(q.get("f", ["img.jpg"])[0], {})

    def page_flaky(self, arg, q):
        n, code = int(q.get("n", ["1"])[0]), int(q.get("code", ["500"])[0])
        if self.first_of("flaky/" + arg, n):
            self.send(code, b"oops\n")
        else:
            self.page_image(q.get("f", ["img.jpg"])[0], {})

    def page_truncated(self, arg, q):
        body, ctype = self.file(arg)
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) + 10000))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True

    def page_html(self, arg, q):
        body = b"<!DOCTYPE html>\n<html><head><title>Not found</title></head><body>gone</body></html>\n"
        self.send(200, body, q.get("ct", ["image/jpeg"])[0])

    def page_empty(self, arg, q):
        self.send(200, b"", "image/jpeg")

    def page_redirect(self, arg, q):
        n = int(arg or "0")
        if n <= 0:
            self.page_image(q.get("f", ["img.jpg"])[0], {})
        else:
            self.send(302, b"", headers=[("Location", "/redirect/%d%s" % (n - 1, "?" + urlsplit(self.path).query
                                                                         if urlsplit(self.path).query else ""))])

    def page_loop(self, arg, q):
        self.send(302, b"", headers=[("Location", "/loop/b" if arg == "a" else "/loop/a")])

    def page_to(self, arg, q):
        self.send(int(q.get("code", ["302"])[0]), b"", headers=[("Location", q["u"][0])])

    def page_endless(self, arg, q):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if "cl" in q:
            self.send_header("Content-Length", q["cl"][0])
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chunk = b"\0" * (1 << 20)
        self.wfile.write(b"\xff\xd8\xff\xe0" + chunk[4:])
        sent = len(chunk)
        try:
            while True:
                self.wfile.write(chunk)
                sent += len(chunk)
        finally:
            with LOCK:
                STATE["bytes_sent"]["endless"] = STATE["bytes_sent"].get("endless", 0) + sent

    def page_robots(self, arg, q):
        body, ctype = self.file(arg)
        self.send(200, body, ctype, headers=[("X-Robots-Tag", h) for h in q.get("h", [])])

    def page_stats(self, arg, q):
        with LOCK:
            body = json.dumps({k: v for k, v in STATE.items() if k != "ids"}).encode()
        self.send(200, body, "application/json")

    def page_reset(self, arg, q):
        reset()
        self.send(200, b"ok\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # clients hanging up are part of the tests


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--also", action="append", default=[], help="more addresses on the same port")
    a = ap.parse_args()
    Handler.corpus = a.corpus
    servers = [Server((a.addr, 0), Handler)]
    port = servers[0].server_address[1]
    servers += [Server((addr, port), Handler) for addr in a.also]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    print(port, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for s in servers:
        s.shutdown()


if __name__ == "__main__":
    main()
