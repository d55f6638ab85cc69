#!/usr/bin/env python3
"""A local webhook receiver for the demo: prints every request it gets and answers 200.

For each request it prints the method, the path, the headers a webhook receiver dispatches and
verifies on (user-agent, content-type, x-hookpipe-*, webhook-* signing headers, and any custom
header given with --show-header), and the body, pretty-printed when it is JSON. With --journal
FILE it also appends one line per request to FILE, so a script can count deliveries.

Python standard library only. Listens on 127.0.0.1 (never on other interfaces).

    scripts/receiver.py --port 8787 [--journal /tmp/deliveries.log] [--show-header x-team]
"""

import argparse
import json
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SHOWN_PREFIXES = ("x-hookpipe-", "webhook-", "x-amplitude-")
SHOWN_NAMES = {"user-agent", "content-type", "authorization"}
MAX_BODY = 64 * 1024 * 1024

_lock = threading.Lock()
_count = 0


def redact(name, value):
    """Authorization values are secrets: show only their scheme."""
    if name == "authorization":
        scheme = value.split(" ", 1)[0] if " " in value else ""
        return f"{scheme} ***".strip()
    return value


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as webhook senders use it
    server_version = "hookpipe-demo-receiver"
    journal = None
    extra_headers = set()

    def log_message(self, fmt, *args):  # the default access log would duplicate our output
        pass

    def _read_body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            total = 0
            while True:
                size_line = self.rfile.readline(1024)
                if not size_line:
                    break
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers end with an empty line
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(chunks)
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self):
        global _count
        try:
            body = self._read_body()
        except (ValueError, OSError) as e:
            self.send_response(400)
            self.send_header("content-length", "0")
            self.send_header("connection", "close")
            self.end_headers()
            print(f"!! unreadable request body: {e}", flush=True)
            return
        with _lock:
            _count += 1
            n = _count
            now = datetime.now(timezone.utc).strftime("%H:%M:%S.%f")[:-3]
            lines = [f"==> #{n} {now} {self.command} {self.path}"]
            for name, value in self.headers.items():
                lname = name.lower()
                if lname in SHOWN_NAMES or lname.startswith(SHOWN_PREFIXES) or lname in self.extra_headers:
                    lines.append(f"    {lname}: {redact(lname, value)}")
            text = body.decode("utf-8", errors="replace")
            try:
                pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
            except ValueError:
                pretty = text
            lines.extend("    " + line for line in pretty.splitlines() or [""])
            print("\n".join(lines), flush=True)
            if self.journal:
                kind = self.headers.get("x-hookpipe-type", "-")
                did = self.headers.get("x-hookpipe-delivery-id", "-")
                with open(self.journal, "a", encoding="utf-8") as f:
                    f.write(f"{n}\t{self.command}\t{self.path}\t{kind}\t{did}\t{len(body)}\n")
        reply = b'{"ok":true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_POST = _handle
    do_PUT = _handle
    do_PATCH = _handle
    do_GET = _handle
    do_DELETE = _handle


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8787, help="port on 127.0.0.1 (default 8787)")
    parser.add_argument("--journal", help="append one tab-separated line per request to this file")
    parser.add_argument("--show-header", action="append", default=[], help="also print this header")
    args = parser.parse_args()
    Handler.journal = args.journal
    Handler.extra_headers = {h.lower() for h in args.show_header}
    try:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    except OSError as e:
        sys.exit(f"receiver: cannot listen on 127.0.0.1:{args.port}: {e}")
    server.daemon_threads = True
    print(f"receiver: listening on http://127.0.0.1:{args.port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
