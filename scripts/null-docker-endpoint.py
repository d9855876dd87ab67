#!/usr/bin/env python3
"""A Docker Engine API endpoint that does nothing: it answers the requests `docker version`
and `docker run --rm IMAGE echo hi` make at once, with the output "hi" and status 0, and no
container behind them. Against it, the docker CLI's own cost of a `run` (its start-up, its
signal set-up, the attach upgrade, five round trips) shows apart from a real endpoint's:
scripts/vch-bench.sh uses it as the floor of `docker run`.
Usage: null-docker-endpoint.py SOCKET_PATH (serves until killed)."""
import json, os, socketserver, sys, threading
from http.server import BaseHTTPRequestHandler

API = "1.43"
started = {}  # container id -> threading.Event, set by start
lock = threading.Lock()


def event_for(cid):
    with lock:
        return started.setdefault(cid, threading.Event())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=None, content_type="application/json"):
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(status)
        self.send_header("API-Version", API)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("API-Version", API)
        self.send_header("OSType", "linux")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        path = self.path.split("?")[0]
        if path.endswith("/_ping"):
            return self.reply(200, b"OK", "text/plain")
        if path.endswith("/version"):
            return self.reply(200, {"Version": "null", "ApiVersion": API, "MinAPIVersion": "1.24", "Os": "linux", "Arch": "amd64"})
        self.reply(404, {"message": "not here"})

    def do_POST(self):
        self.body()
        path = self.path.split("?")[0]
        parts = path.strip("/").split("/")
        if path.endswith("/containers/create"):
            cid = os.urandom(16).hex()
            event_for(cid)
            return self.reply(201, {"Id": cid, "Warnings": []})
        cid = parts[-2] if len(parts) >= 2 else ""
        if path.endswith("/attach"):
            self.send_response(101)
            self.send_header("Connection", "Upgrade")
            self.send_header("Upgrade", "tcp")
            self.send_header("Content-Type", "application/vnd.docker.raw-stream")
            self.end_headers()
            self.wfile.flush()
            event_for(cid).wait(10)
            self.wfile.write(b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n")
            self.wfile.flush()
            self.close_connection = True
            return
        if path.endswith("/wait"):
            self.send_response(200)
            self.send_header("API-Version", API)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            event_for(cid).wait(10)
            data = b'{"StatusCode":0}\n'
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
            return
        if path.endswith("/start"):
            event_for(cid).set()
            self.send_response(204)
            self.send_header("API-Version", API)
            self.end_headers()
            return
        self.reply(404, {"message": "not here"})


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        request, _ = super().get_request()
        return request, ("null", 0)


if __name__ == "__main__":
    path = sys.argv[1]
    if os.path.exists(path):
        os.unlink(path)
    Server(path, Handler).serve_forever()
