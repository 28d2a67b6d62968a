"""Loopback web servers for the fetcher's tests and the ingest benchmarks.

Nginx(root, workdir, workers=1, hosts=1, access_log=True, http_extra=""): Debian's nginx
serving `root` on a free port of 127.0.0.1 (and of 127.0.0.2 .. 127.0.0.N
with hosts=N; plain HTTP/1.1 with keep-alive) and, when openssl is installed, a second
port with TLS and HTTP/2 under a self-signed certificate for 127.0.0.1 and
localhost (`cert` is its PEM file). The access log has one line per
request: connection serial, requests on that connection, status, URI.
`http_extra` is added to the http block as is (e.g. "limit_rate 16k;").

FaultServer(corpus, also=[...]): fault_server.py beside this file, on one
port of 127.0.0.1 (and of every address in `also`).

Both are context managers; `nginx_path()` is None when nginx is missing.

require_nginx() and web_corpus(dir, count) are what the tests that use
them start with: they exit 77 (ctest's skip) when nginx or the wallpaper
photos are not installed.
"""
import os, shutil, signal, socket, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))


def nginx_path():
    for p in ("/usr/sbin/nginx", shutil.which("nginx")):
        if p and os.path.exists(p):
            return p
    return None


def require_nginx():
    """Exits 77 (skipped) when Debian's nginx is not installed."""
    if not nginx_path():
        print("skipped: nginx is not installed (scripts/install-deps.sh --test)")
        sys.exit(77)


def web_corpus(out, count, jobs=2):
    """make_web_corpus.py into `out` (reused when made with the same
    parameters); exits 77 when no wallpaper photo is installed. Returns the
    corpus's file names in index order."""
    rc = subprocess.run([sys.executable, os.path.join(HERE, "..", "make_web_corpus.py"), "--out", out, "--count",
                         str(count), "--jobs", str(jobs)]).returncode
    if rc == 77:
        print("skipped: no wallpaper photos installed")
        sys.exit(77)
    assert rc == 0, "make_web_corpus.py failed"
    with open(os.path.join(out, "index.tsv")) as f:
        return [line.split("\t")[0] for line in f.read().splitlines()[1:]]


def web_test_start(tokenizer, work, count):
    """The start of a web ingest test: exits 77 when the tokenizer fixture
    did not run or nginx or the photos are missing; `work` made empty, the
    corpus of `count` photos in work/corpus. Returns (corpus dir, file names)."""
    if not os.path.exists(tokenizer):
        print(f"skipped: {tokenizer} is missing (the tokenizer_fetch_reference fixture did not run)")
        sys.exit(77)
    require_nginx()
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    corpus = os.path.join(work, "corpus")
    return corpus, web_corpus(corpus, count)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} is not listening on {port}")


def _die_with_parent():
    """In the child before exec: SIGTERM when the test process dies (no orphaned servers)."""
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop(proc):
    """Ends a server we started: SIGTERM, then SIGKILL after 10 s."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Nginx:
    def __init__(self, root, workdir, workers=1, hosts=1, access_log=True, http_extra=""):
        self.root, self.dir, self.workers = os.path.abspath(root), os.path.abspath(workdir), workers
        self.hosts, self.logging, self.http_extra = hosts, access_log, http_extra
        self.proc = None
        self.cert = None

    def __enter__(self):
        os.makedirs(self.dir, exist_ok=True)
        d = self.dir
        self.access_log = os.path.join(d, "access.log")
        if os.path.exists(self.access_log):
            os.unlink(self.access_log)
        tls = ""
        if shutil.which("openssl"):
            self.cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
            if not os.path.exists(self.cert):
                subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                                "-out", self.cert, "-days", "2", "-subj", "/CN=localhost",
                                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                               check=True, capture_output=True)
            self.tls_port = free_port()
            tls = f"""
  server {{
    listen 127.0.0.1:{self.tls_port} ssl http2;
    ssl_certificate {self.cert};
    ssl_certificate_key {key};
    root {self.root};
  }}"""
        self.port = free_port()
        listens = "\n".join(f"    listen 127.0.0.{h}:{self.port};" for h in range(1, self.hosts + 1))
        user = "user root root;" if os.geteuid() == 0 else ""
        temp = "\n".join(f"  {k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = f"""daemon off;
{user}
worker_processes {self.workers};
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{
  types {{ image/jpeg jpg jpeg; image/png png; image/webp webp; text/html html; }}
  default_type application/octet-stream;
  log_format fetch '$connection $connection_requests $status $request_uri';
  access_log {f"{d}/access.log fetch" if self.logging else "off"};
  keepalive_requests 100000;
  keepalive_timeout 120s;
  {self.http_extra}
{temp}
  server {{
{listens}
    root {self.root};
  }}{tls}
}}
"""
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen([nginx_path(), "-p", d, "-e", f"{d}/error.log", "-c",
                                      os.path.join(d, "nginx.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=_die_with_parent)
        wait_port(self.port, self.proc, "nginx")
        return self

    def log(self):
        """Access log lines as (connection, requests_on_it, status, uri)."""
        time.sleep(0.2)  # nginx writes the log line after the response
        rows = []
        with open(self.access_log) as f:
            for line in f:
                c, n, status, uri = line.rstrip("\n").split(" ", 3)
                rows.append((int(c), int(n), int(status), uri))
        return rows

    def __exit__(self, *exc):
        stop(self.proc)


class FaultServer:
    def __init__(self, corpus, also=()):
        self.corpus, self.also = corpus, list(also)
        self.proc = None

    def __enter__(self):
        cmd = [sys.executable, os.path.join(HERE, "fault_server.py"), "--corpus", self.corpus]
        for a in self.also:
            cmd += ["--also", a]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
        self.port = int(self.proc.stdout.readline())
        return self

    def url(self, path, host="127.0.0.1"):
        return f"http://{host}:{self.port}{path}"

    def get(self, path):
        import urllib.request
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from the environment
        with opener.open(self.url(path), timeout=10) as r:
            return r.read()

    def stats(self):
        import json
        return json.loads(self.get("/stats"))

    def reset(self):
        self.get("/reset")

    def __exit__(self, *exc):
        stop(self.proc)
