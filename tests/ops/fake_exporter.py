#!/usr/bin/env python3
"""A fake deployment for the tests of `transfuse top`: metrics endpoints
served by Python's http.server, one port per role, whose counters grow with
time as the real processes' do (names from the metrics contract), plus
hostile endpoints.

usage: fake_exporter.py PORTFILE ROLE[,ROLE...]
Writes one line "ROLE PORT" per role to PORTFILE (atomically) once all
listen, then serves until killed. Roles:
  ingest      two workers, rows at 50/s and 30/s, dns and http_404 failures,
              bytes, in flight, planned rows (an ETA)
  encode      images at 4/s; with FAKE_BOOTSTRAP set, also consumer info:
              group "encoders" on topic "samples" of that cluster
  trainer0, trainer1, trainer2
              one rank each; rank 2 lags 40 steps behind; trainer1 reports
              a NaN diffusion loss
  garbage     not the text format at all
  huge        an answer of 20 MB
  longline    one line of 200 KiB
  slow        answers after 30 s
  escape      a label value with terminal escape sequences and bad UTF-8 bytes
  many        300,000 series
  notfound    HTTP 404
  badutf8     a label value that is not UTF-8
"""
import http.server, os, socketserver, sys, threading, time

START = time.time() - 10  # as if the processes had been running for a while


def t():
    return time.time() - START


def ingest():
    s = t()
    out = ["# TYPE transfuse_ingest_rows_total counter"]
    for w, rate in (("0", 50.0), ("1", 30.0)):
        ok = int(rate * s * 0.9)
        failed = int(rate * s * 0.1)
        out += [f'transfuse_ingest_rows_total{{outcome="ok",worker="{w}"}} {ok}',
                f'transfuse_ingest_rows_total{{outcome="failed",worker="{w}"}} {failed}',
                f'transfuse_ingest_rows_total{{outcome="skipped",worker="{w}"}} 0',
                f'transfuse_ingest_failures_total{{reason="dns",worker="{w}"}} {int(failed * 0.7)}',
                f'transfuse_ingest_failures_total{{reason="http_404",worker="{w}"}} {failed - int(failed * 0.7)}',
                f'transfuse_ingest_bytes_total{{worker="{w}"}} {int(rate * s * 120000)}',
                f'transfuse_ingest_in_flight{{worker="{w}"}} 16',
                f'transfuse_ingest_rows_planned{{worker="{w}"}} 100000',
                f'transfuse_fetch_seconds_sum{{worker="{w}"}} {rate * s * 0.2}',
                f'transfuse_fetch_seconds_count{{worker="{w}"}} {int(rate * s)}']
    out.append('transfuse_build_info{version="0.1.0",command="ingest"} 1')
    return "\n".join(out) + "\n"


def encode():
    s = t()
    # a consumer names its group and topic (FAKE_BOOTSTRAP: where)
    info = (f'transfuse_kafka_consumer_info{{bootstrap="{os.environ["FAKE_BOOTSTRAP"]}",topic="samples",'
            'group="encoders"} 1\n' if os.environ.get("FAKE_BOOTSTRAP") else "")
    return info + ("# TYPE transfuse_encode_images_total counter\n"
            f"transfuse_encode_images_total {int(4 * s)}\n"
            f"transfuse_encode_batch_seconds_sum {s}\ntransfuse_encode_batch_seconds_count {int(s)}\n"
            'transfuse_build_info{version="0.1.0",command="encode"} 1\n')


def trainer(rank):
    s = t()
    step = int(10 * s) - (40 if rank == 2 else 0)
    step = max(step, 0)
    diff = "NaN" if rank == 1 else f"{0.5 + 1.0 / (1 + step / 50):.4f}"
    return (f'transfuse_train_step{{rank="{rank}"}} {step}\n'
            f'transfuse_train_steps_planned{{rank="{rank}"}} 10000\n'
            f'transfuse_train_loss_lm{{rank="{rank}"}} {2.0 + 3.0 / (1 + step / 30):.4f}\n'
            f'transfuse_train_loss_diffusion{{rank="{rank}"}} {diff}\n'
            f'transfuse_train_grad_norm{{rank="{rank}"}} 1.25\n'
            f'transfuse_train_lr{{rank="{rank}"}} 0.0003\n'
            f'transfuse_train_tokens_total{{rank="{rank}"}} {step * 4096}\n'
            f'transfuse_train_samples_total{{rank="{rank}"}} {step * 8}\n'
            f'transfuse_train_data_position{{rank="{rank}"}} {step * 8}\n'
            f'transfuse_build_info{{version="0.1.0",command="train"}} 1\n')


BODIES = {
    "ingest": ingest,
    "encode": encode,
    "trainer0": lambda: trainer(0),
    "trainer1": lambda: trainer(1),
    "trainer2": lambda: trainer(2),
    "garbage": lambda: "<html><body>this is not prometheus</body></html>\n",
    "huge": lambda: "x 1\n" * (5 * 1024 * 1024),
    "longline": lambda: 'l{v="' + "y" * (200 * 1024) + '"} 1\n',
    "escape": lambda: 'transfuse_ingest_rows_total{outcome="ok",worker="\x1b[2J\x1b[31mEVIL\\n"} 5\n',
    "many": lambda: "".join(f"m{{i=\"{i}\"}} 1\n" for i in range(300000)),
}


def make_handler(role):
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if role == "slow":
                time.sleep(30)
            if role == "notfound":
                self.send_error(404)
                return
            if role == "badutf8":
                body = b'transfuse_ingest_rows_total{outcome="ok",worker="\xff\xfe"} 1\n'
            else:
                body = BODIES[role]().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *a):
            pass

    return H


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    portfile, roles = sys.argv[1], sys.argv[2].split(",")
    lines = []
    for role in roles:
        srv = Server(("127.0.0.1", 0), make_handler(role))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        lines.append(f"{role} {srv.server_address[1]}\n")
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(lines)
    os.rename(tmp, portfile)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
