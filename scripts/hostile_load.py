#!/usr/bin/env python3
"""Hostile load against `deepcat serve`, on loopback only and bounded in time.

    scripts/hostile_load.py MODEL [--deepcat target/release/deepcat] [--idle 1000]
                            [--seconds 60] [--bombs 16] [--side 7000] [-- extra serve flags]

Starts `deepcat serve MODEL --port 0` with default settings, then for --seconds:
  * holds --idle idle TCP connections that send nothing, reopening each one the server
    closes (an attacker who reconnects every header timeout);
  * probes every 0.2 s with GET /healthz and POST of a bundled photo, each of which must be
    answered 200 within 1 s;
  * after 3 s, posts --bombs PNGs at once that each decode to --side x --side pixels (a
    7000x7000 PNG of one colour is about 140 KB and 147 MB decoded).
It then reads the server's peak resident memory (VmHWM in /proc) and /metrics, prints a
summary, and exits 1 if a probe failed or took 1 s or more, or peak memory reached --max-rss-mb
(250). Needs only Python 3's standard library; Linux (for /proc).
"""

import argparse
import http.client
import os
import re
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

HOST = "127.0.0.1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bomb_png(side):
    """A valid side x side 8-bit RGB PNG of one colour: tiny on the wire, huge decoded."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    row = b"\x00" * (1 + 3 * side)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def request(port, method, path, body=None, timeout=30.0):
    """(status, seconds, body) of one request on a fresh connection; status 0 on failure."""
    start = time.monotonic()
    try:
        c = http.client.HTTPConnection(HOST, port, timeout=timeout)
        c.request(method, path, body=body)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, time.monotonic() - start, data
    except OSError as e:
        return 0, time.monotonic() - start, str(e).encode()


class IdleHorde(threading.Thread):
    """Keeps `count` connections open and silent, reopening those the server closes."""

    def __init__(self, port, count, stop):
        super().__init__(daemon=True)
        self.port, self.count, self.stop = port, count, stop
        self.open_now, self.reopened, self.min_open, self.failed = 0, 0, None, 0

    def connect(self, sel):
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect((HOST, self.port))
        except OSError:
            self.failed += 1
            s.close()
            return
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)

    def run(self):
        sel = selectors.DefaultSelector()
        for _ in range(self.count):
            self.connect(sel)
        while not self.stop.is_set():
            for key, _ in sel.select(timeout=0.2):
                try:
                    data = key.fileobj.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
                    self.reopened += 1
                    self.connect(sel)
            self.open_now = len(sel.get_map())
            if time.monotonic() > self.started + 1:
                self.min_open = self.open_now if self.min_open is None else min(self.min_open, self.open_now)
        for key in list(sel.get_map().values()):
            key.fileobj.close()

    def start(self):
        self.started = time.monotonic()
        super().start()


def probe(port, photo, stop, log):
    """Health check and prediction every 0.2 s; (route, status, seconds) into `log`."""
    while not stop.is_set():
        status, took, _ = request(port, "GET", "/healthz", timeout=5)
        log.append(("healthz", status, took))
        status, took, _ = request(port, "POST", "/api/predict", photo, timeout=5)
        log.append(("predict", status, took))
        stop.wait(0.2)


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--deepcat", default=os.path.join(ROOT, "target/release/deepcat"))
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--bombs", type=int, default=16)
    ap.add_argument("--side", type=int, default=7000)
    ap.add_argument("--max-rss-mb", type=float, default=250)
    ap.add_argument("serve_flags", nargs="*", help="after --: more flags for deepcat serve")
    a = ap.parse_args()
    seconds = min(a.seconds, 600)  # bounded whatever is asked

    photo = open(os.path.join(ROOT, "data/cats/cat_0000.jpg"), "rb").read()
    bomb = bomb_png(a.side)
    server = subprocess.Popen([a.deepcat, "serve", a.model, "--port", "0", *a.serve_flags],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not m:
            sys.exit(f"unexpected first line from deepcat serve: {line!r}")
        port = int(m.group(1))
        baseline = peak_rss_mb(server.pid)
        stop = threading.Event()
        horde = IdleHorde(port, a.idle, stop)
        horde.start()
        time.sleep(1)
        log = []
        prober = threading.Thread(target=probe, args=(port, photo, stop, log), daemon=True)
        prober.start()
        time.sleep(2)
        bombs = []

        def one_bomb():
            bombs.append(request(port, "POST", "/api/predict", bomb, timeout=60)[:2])
        threads = [threading.Thread(target=one_bomb, daemon=True) for _ in range(a.bombs)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + max(0.0, seconds - 3)
        while time.monotonic() < deadline:
            time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        prober.join(timeout=10)
        horde.join(timeout=10)
        peak = peak_rss_mb(server.pid)
        metrics = request(port, "GET", "/metrics")[2].decode(errors="replace")
    finally:
        server.terminate()
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()

    report(a, baseline, peak, horde, log, bombs, metrics)


def report(a, baseline, peak, horde, log, bombs, metrics):
    failed = [(r, s, t) for r, s, t in log if s != 200 or t >= 1.0]
    worst = max((t for _, _, t in log), default=float("nan"))
    statuses = {}
    for s, _ in bombs:
        statuses[s] = statuses.get(s, 0) + 1
    wanted = ("deepcat_decode_budget_waits_total", "deepcat_budget_refusals_total",
              "deepcat_connections_refused_total", "deepcat_images_classified_total")
    print(f"idle connections: {a.idle} asked, at least {horde.min_open} open at every check after "
          f"the first second, {horde.reopened} reopened after the server closed them, "
          f"{horde.failed} connects failed")
    print(f"probes: {len(log)} requests, {len(failed)} failed or took >= 1 s, slowest {worst:.3f} s")
    print(f"bombs: {a.bombs} PNGs of {a.side}x{a.side}: statuses {statuses}, "
          f"slowest {max((t for _, t in bombs), default=0):.1f} s")
    for line in metrics.splitlines():
        if line.startswith(wanted):
            print("metrics:", line)
    print(f"server peak resident memory: {peak:.1f} MB (at start {baseline:.1f} MB; "
          f"limit {a.max_rss_mb:.0f} MB)")
    ok = not failed and peak < a.max_rss_mb and len(log) > 0
    for f in failed[:10]:
        print("failed probe:", f)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
