#!/usr/bin/env python3
"""A registry token endpoint for the bearer-auth test (the Docker token protocol): answers
GET /token?service=S&scope=repository:NAME:ACTIONS with a JWT (RS256, signed by openssl with
KEY, its certificate CERT in the x5c header) that docker-registry verifies against CERT.
With USER and PASSWORD, only requests carrying that basic auth get a token.
Usage: token-server.py KEY CERT [USER PASSWORD]; prints "PORT PID", then serves."""
import base64, json, os, subprocess, sys, time
from http.server import HTTPServer, BaseHTTPRequestHandler
from urllib.parse import urlparse, parse_qs

key, cert = sys.argv[1], sys.argv[2]
user, password = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else ("", "")
der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"], capture_output=True, check=True).stdout


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenHandler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path != "/token":
            return self.answer(404, {"errors": [{"code": "NOT_FOUND", "message": "no such path"}]})
        query = parse_qs(url.query)
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if user and self.headers.get("Authorization", "") != expected:
            return self.answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":", 2) if scope.count(":") >= 2 else ("repository", scope, "pull")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
        claims = {"iss": "vmfork-token", "sub": user or "anonymous", "aud": query.get("service", [""])[0],
                  "exp": now + 300, "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing.encode(),
                                   capture_output=True, check=True).stdout
        token = signing + "." + b64url(signature)
        self.answer(200, {"token": token, "access_token": token, "expires_in": 300})

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), TokenHandler)
print(server.server_address[1], os.getpid(), flush=True)
server.serve_forever()
