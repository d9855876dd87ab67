#!/usr/bin/env python3
"""The management web UI in a real browser: headless Debian chromium driven over WebDriver
(chromedriver, spoken with urllib), against a real `vmfork serve` with real containers run by
the real docker CLI through a VCH the browser created. Each check prints one line,
"ui-test passed: NAME" or "ui-test failed: NAME: WHY", which scripts/test.sh counts.
Screenshots go to artifacts/ui/ (gitignored).

Usage: scripts/ui_browser_test.py VMFORK_BINARY ARTIFACTS_FOLDER
"""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

VMFORK = os.path.realpath(sys.argv[1])
ARTIFACTS = os.path.realpath(sys.argv[2])
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
TAB, ENTER = "\ue004", "\ue007"  # WebDriver's key codes
results = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, unix=None, timeout=60):
    """One HTTP request; over a Unix socket when `unix` is given. Returns (status, bytes)."""
    data = json.dumps(body).encode() if body is not None else None
    if unix:
        out = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket", unix, "-X", method,
                              "-H", "Content-Type: application/json"] + (["-d", data.decode()] if data else []) + ["http://localhost" + url],
                             capture_output=True, timeout=timeout)
        text, _, status = out.stdout.rpartition(b"\n")
        return int(status or 0), text
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class WebDriver:
    """The few WebDriver commands the checks use (W3C protocol, JSON over HTTP)."""

    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": shutil.which("chromium") or "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1366,1000",
                     "--no-first-run", "--disable-extensions", "--disable-background-networking"]}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        if not path.startswith("/session") or path == "/session":
            url = self.base + path
        else:
            url = self.base + path
        status, data = http(method, url, body if body is not None else ({} if method == "POST" else None))
        value = json.loads(data or b"{}").get("value")
        if status >= 400:
            raise RuntimeError(f"WebDriver {method} {path}: {status} {value}")
        return value

    def s(self, path):
        return f"/session/{self.session}{path}"

    def open(self, url):
        self.call("POST", self.s("/url"), {"url": url})

    def find(self, css, timeout=10):
        deadline = time.time() + timeout
        while True:
            try:
                return self.call("POST", self.s("/element"), {"using": "css selector", "value": css})[ELEMENT]
            except RuntimeError:
                if time.time() > deadline:
                    raise RuntimeError(f"no element {css} on {self.url()}")
                time.sleep(0.2)

    def find_all(self, css):
        return [e[ELEMENT] for e in self.call("POST", self.s("/elements"), {"using": "css selector", "value": css})]

    def click(self, css):
        # A live region may be swapped between finding and clicking: find it again then.
        for attempt in range(5):
            try:
                return self.call("POST", self.s(f"/element/{self.find(css)}/click"))
            except RuntimeError as error:
                if "stale element" not in str(error) or attempt == 4:
                    raise
                time.sleep(0.2)

    def type(self, css, text, clear=True):
        element = self.find(css)
        if clear:
            self.call("POST", self.s(f"/element/{element}/clear"))
        self.call("POST", self.s(f"/element/{element}/value"), {"text": text})

    def text(self, css):
        for attempt in range(5):
            try:
                return self.call("GET", self.s(f"/element/{self.find(css)}/text"))
            except RuntimeError as error:
                if "stale element" not in str(error) or attempt == 4:
                    raise
                time.sleep(0.2)

    def script(self, source, *args):
        return self.call("POST", self.s("/execute/sync"), {"script": source, "args": list(args)})

    def keys(self, *keys):
        """Presses and releases each key (WebDriver key codes, e.g. TAB, ENTER) on the focused element."""
        actions = []
        for key in keys:
            actions += [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]
        self.call("POST", self.s("/actions"), {"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})

    def url(self):
        return self.call("GET", self.s("/url"))

    def wait(self, what, predicate, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except RuntimeError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what} (page {self.url()})")

    def screenshot(self, name):
        png = base64.b64decode(self.call("GET", self.s("/screenshot")))
        with open(os.path.join(ARTIFACTS, name + ".png"), "wb") as f:
            f.write(png)

    def quit(self):
        try:
            self.call("DELETE", self.s(""))
        except Exception:
            pass


def slow_registry():
    """A registry on loopback that serves one image, slow/latest (static busybox in one gzip'ed
    layer), its layer in pieces over about three seconds, so a pull can be watched while it
    runs. Returns (port, server)."""
    import gzip, hashlib, http.server, io, tarfile, threading
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        folder = tarfile.TarInfo("bin")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        tar.add("/bin/busybox", arcname="bin/busybox")
    layer_tar = raw.getvalue()
    layer = gzip.compress(layer_tar, compresslevel=1)
    digest = lambda data: "sha256:" + hashlib.sha256(data).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Entrypoint": ["/bin/busybox"], "Cmd": ["true"], "Env": ["PATH=/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": [digest(layer_tar)]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(layer), "size": len(layer)}]}).encode()
    blobs = {digest(config): config, digest(layer): layer}

    class Registry(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, body, kind, slow=False):
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Docker-Content-Digest", digest(body))
            self.end_headers()
            if self.command == "HEAD":
                return
            piece = max(1, len(body) // 30) if slow else len(body)
            for start in range(0, len(body), piece):
                self.wfile.write(body[start:start + piece])
                self.wfile.flush()
                if slow:
                    time.sleep(0.1)

        def do_GET(self):
            if self.path == "/v2/":
                return self.answer(b"{}", "application/json")
            if self.path == "/v2/slow/manifests/latest":
                return self.answer(manifest, "application/vnd.oci.image.manifest.v1+json")
            if self.path.startswith("/v2/slow/blobs/") and self.path.rsplit("/", 1)[1] in blobs:
                body = blobs[self.path.rsplit("/", 1)[1]]
                return self.answer(body, "application/octet-stream", slow=body is layer)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1], server


def mib(count):
    """Bytes as the UI's Format.mib writes them."""
    if count == 0:
        return "0 MiB"
    if count < 1048576:
        return "%.0f KiB" % (count / 1024)
    value = count / 1048576
    if value >= 10240:
        return "%.1f GiB" % (value / 1024)
    if value >= 100:
        return "%.0f MiB" % value
    return "%.1f MiB" % value


def check(name):
    def wrap(body):
        try:
            body()
            results.append((name, None))
            print(f"ui-test passed: {name}", flush=True)
        except Exception as error:  # a failed check names what it saw
            results.append((name, error))
            print(f"ui-test failed: {name}: {error}", flush=True)
            traceback.print_exc(limit=3)
        return body
    return wrap


# Every visible form field has a label, every control is a link or a button reachable with
# the keyboard (no tabindex below 0, no click handlers on plain elements).
ACCESSIBILITY = """
const problems = [];
for (const el of document.querySelectorAll('input, select, textarea')) {
  if (el.type === 'hidden') continue;
  const labelled = (el.labels && el.labels.length > 0) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
  if (!labelled) problems.push('no label: ' + (el.id || el.name || el.outerHTML.slice(0, 60)));
}
for (const el of document.querySelectorAll('a, button, input, select, textarea')) {
  if (el.tabIndex < 0 && el.type !== 'hidden') problems.push('not keyboard-reachable: ' + el.outerHTML.slice(0, 60));
}
for (const el of document.querySelectorAll('[onclick]')) problems.push('click handler on ' + el.tagName);
return problems;
"""


def main():
    os.makedirs(ARTIFACTS, exist_ok=True)
    work = tempfile.mkdtemp(prefix="vmfork-ui-")
    state = os.path.join(work, "state")
    rootfs = os.path.join(work, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    for applet in ["sh", "echo", "sleep", "cat"]:
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    port, driver_port = free_port(), free_port()
    sock = os.path.join(state, "vmfork.sock")
    daemon_log = open(os.path.join(ARTIFACTS, "daemon.log"), "w")
    daemons = []

    def start_daemon():
        daemons.append(subprocess.Popen([VMFORK, "serve", "--state", state, "--listen", f"127.0.0.1:{port}", "--stop-grace", "1"],
                                        stdout=daemon_log, stderr=subprocess.STDOUT))
        deadline = time.time() + 30
        while time.time() < deadline:
            if os.path.exists(sock) and http("GET", "/v1/_ping", unix=sock)[0] == 200:
                return
            time.sleep(0.1)
        raise RuntimeError("the daemon does not answer on its socket")

    def stop_daemon():
        daemon = daemons[-1]
        daemon.send_signal(signal.SIGTERM)
        try:
            return daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            return "killed after 30 s"

    def restart_daemon():
        status = stop_daemon()
        assert status == 0, f"the daemon exited with {status} at SIGTERM"
        start_daemon()

    chromedriver = subprocess.Popen([shutil.which("chromedriver") or "/usr/bin/chromedriver", f"--port={driver_port}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    docker_env = dict(os.environ, DOCKER_CONFIG=os.path.join(work, "docker-config"), HOME=work)
    os.makedirs(docker_env["DOCKER_CONFIG"])
    browser = None
    base = f"http://127.0.0.1:{port}"
    try:
        start_daemon()
        token = open(os.path.join(state, "api-token")).read().split()[1]
        # What the VCH tests set up too: the image, a simulated host with a warm parent of it.
        for path, body in [("/v1/images", {"name": "busybox", "rootfs": rootfs, "executable": "/bin/busybox", "environment": ["PATH=/bin"]}),
                           ("/v1/placement/hosts", {"name": "h1", "cpuCores": 2, "nodeMemoryKiB": [4194304]}),
                           ("/v1/placement/images", {"name": "busybox", "parentMemoryKiB": 65536, "growthPerChildKiB": 1024, "cpuMHzPerChild": 10}),
                           ("/v1/placement/warm-parents", {"host": "h1", "image": "busybox", "node": 0})]:
            status, text = http("POST", path, body, unix=sock)
            assert status < 300, f"POST {path}: {status} {text[:300]}"
        deadline = time.time() + 30
        while True:
            try:
                browser = WebDriver(driver_port)
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        run_checks(browser, base, token, sock, docker_env, restart_daemon)
    except Exception as error:
        results.append(("setup", error))
        print(f"ui-test failed: setup: {error}", flush=True)
        traceback.print_exc()
    finally:
        if browser:
            browser.quit()
        chromedriver.terminate()
        if daemons:
            stop_daemon()
        daemon_log.close()
        shutil.rmtree(work, ignore_errors=True)
    failed = [name for name, error in results if error]
    print(f"ui-test: {len(results) - len(failed)} passed, {len(failed)} failed; screenshots in {ARTIFACTS}")
    return 1 if failed else 0


def run_checks(b, base, token, sock, docker_env, restart_daemon):
    shared = {}

    def docker(*args, timeout=60):
        out = subprocess.run([DOCKER, "-H", shared["docker_host"]] + list(args), capture_output=True, text=True, env=docker_env, timeout=timeout)
        assert out.returncode == 0, f"docker {' '.join(args)}: {out.returncode} {out.stderr.strip()}"
        return out.stdout

    @check("sign-in refuses a wrong token and takes the right one, by keyboard")
    def _():
        b.open(base + "/ui/containers")
        b.wait("the sign-in page", lambda: "/ui/login" in b.url())
        b.type("#token", "not-the-token\n")
        b.wait("the refusal", lambda: "not one of this agent" in b.text("[role=alert]"))
        b.type("#token", token + "\n")  # Enter submits: the form works from the keyboard
        b.wait("the containers page after sign-in", lambda: b.url().endswith("/ui/containers") and b.text("h1") == "Containers")

    @check("a form posted from another site is refused, and the API still wants its bearer token")
    def _():
        request = urllib.request.Request(base + "/ui/login", data=f"token={token}".encode(), method="POST",
                                         headers={"Origin": "http://attacker.example", "Content-Type": "application/x-www-form-urlencoded"})
        try:
            urllib.request.urlopen(request, timeout=30)
            raise AssertionError("a cross-site sign-in was accepted")
        except urllib.error.HTTPError as error:
            assert error.code == 403, error.code
        assert http("GET", base + "/v1/containers")[0] == 401, "the API answered without a token"

    pages = [("overview", "/ui/", "Overview"), ("containers", "/ui/containers", "Containers"), ("images", "/ui/images", "Warm parents and images"),
             ("capacity", "/ui/capacity", "Capacity"), ("events", "/ui/events", "Events"), ("vchs", "/ui/vchs", "VCHs"),
             ("vch-wizard", "/ui/vchs/new", "Create a VCH")]

    @check("every page loads, labels every field and needs no mouse")
    def _():
        for name, path, title in pages:
            b.open(base + path)
            assert b.text("h1") == title, f"{path}: heading {b.text('h1')!r}"
            alerts = [e for e in b.find_all(".error[role=alert]")]
            assert not alerts, f"{path} shows an error: {b.text('.error[role=alert]')}"
            problems = b.script(ACCESSIBILITY)
            assert not problems, f"{path}: {problems}"
            b.screenshot(name)

    @check("the wizard refuses bad input next to each field, then creates a VCH and shows its docker -H line")
    def _():
        b.open(base + "/ui/vchs/new")
        b.click("#pool-new")
        b.type("#newPool", "uipool")
        b.type("#reservationMiB", "lots")
        b.click("#create")
        b.wait("field errors", lambda: b.find_all("#name-error") and b.find_all("#reservationMiB-error"))
        assert "whole number" in b.text("#reservationMiB-error")
        b.screenshot("vch-wizard-errors")
        b.type("#name", "bad name!")
        b.type("#reservationMiB", "256")
        b.type("#limitMiB", "2048")
        b.click("#create")
        # The page before (its empty name refused by the wizard) also says "1-30 letters": wait for
        # this answer's own state, the pool made on the way now offered as the existing pool.
        b.wait("the name refused by the agent, the new pool offered",
               lambda: b.script("return document.getElementById('pool-existing').checked && document.getElementById('pool').value") == "uipool")
        assert "1-30 letters" in b.text("#name-error"), b.text("#name-error")
        assert "Give the VCH a name" not in b.text("#name-error"), b.text("#name-error")
        b.type("#name", "web")
        b.script("document.getElementById('warmImage').value = 'busybox';")
        b.type("#parents", "1")
        b.click("#create")
        b.wait("the new VCH's page", lambda: b.find_all("#docker-command"))
        assert "Keeping 1 warm parent(s) of busybox" in b.text("[role=status]"), b.text("[role=status]")
        command = b.text("#docker-command")
        assert command.startswith("docker -H unix://") and command.endswith(" ps"), command
        shared["docker_host"] = command.split()[2]
        b.screenshot("vch-created")
        status, text = http("GET", "/v1/vchs/web", unix=sock)
        assert status == 200 and json.loads(text)["pool"] == "uipool", text

    @check("the keyboard alone reaches and follows a link (Tab, then Enter)")
    def _():
        b.open(base + "/ui/vchs")
        for _ in range(40):
            b.keys(TAB)
            if b.script("return document.activeElement && document.activeElement.id") == "create-vch":
                break
        else:
            raise AssertionError("40 Tabs never reached the Create a VCH link")
        b.keys(ENTER)
        b.wait("the wizard", lambda: b.text("h1") == "Create a VCH")

    @check("the capacity page shows the report's SVG chart and answers a what-if")
    def _():
        b.open(base + "/ui/capacity")
        assert b.script("return document.querySelectorAll('#capacity-chart svg').length") == 1, "no inline SVG chart"
        b.type("#w-rate", "5")
        b.script("document.getElementById('w-pool').value = 'uipool'; document.getElementById('w-image').value = 'busybox';")
        b.type("#w-lifetime", "30")
        b.click("form[aria-label='What if'] button[type=submit]")
        b.wait("the what-if answer", lambda: b.find_all("#what-if-result") or b.find_all(".error[role=alert]"))
        assert b.find_all("#what-if-result"), "what-if refused: " + b.text(".error[role=alert]")
        assert "launches/s" in b.text("#what-if-result"), b.text("#what-if-result")
        b.screenshot("capacity-what-if")

    @check("a container run with the docker CLI on the new VCH appears in the containers table live")
    def _():
        b.open(base + "/ui/containers?vch=web")
        b.find("#containers-table")
        docker("run", "-d", "--name", "long", "busybox", "sleep", "300")
        row = "#containers-table tr[data-name='web.long'] td.state"
        b.wait("the row of web.long (without reloading)", lambda: b.find_all(row) and b.text(row) == "running")
        docker("run", "--name", "short", "busybox", "echo", "hi from docker")
        b.wait("the row of web.short", lambda: b.find_all("tr[data-name='web.short'] td.state") and b.text("tr[data-name='web.short'] td.state") == "exited")
        b.screenshot("containers")

    @check("a container's page streams its output while it runs, and removes it after asking")
    def _():
        # It prints, waits for a line on its standard input (the guest does not fork, so no
        # sleep from sh), then prints again: the page must show the first line before the second exists.
        status, text = http("POST", "/v1/containers", {"image": "busybox", "name": "web.chatty", "arguments": ["sh", "-c", "echo first; read x; echo second $x"],
                                                       "openStdin": True, "labels": {"vmfork.vch": "web"}}, unix=sock)
        assert status == 201, text
        cid = json.loads(text)["id"]
        assert http("POST", f"/v1/containers/{cid}/start", unix=sock)[0] == 200
        b.open(base + "/ui/containers/" + cid)
        b.wait("the first line while it runs", lambda: "first" in b.text("#logs") and "following" in b.text("#logs-state"))
        assert "second" not in b.text("#logs")
        subprocess.run(["curl", "-s", "--unix-socket", sock, "-X", "POST", "--data-binary", "now\n",
                        f"http://localhost/v1/containers/{cid}/stdin?close=true"], check=True, timeout=30)
        b.wait("the second line and the end", lambda: "second now" in b.text("#logs") and "ended" in b.text("#logs-state"), timeout=30)
        # Removed from its page, after the question.
        b.click("p.actions a[href$='action=remove']")
        b.wait("the question", lambda: "Remove container web.chatty?" in b.text("#question"))
        b.click("#confirm")
        b.wait("the removal said", lambda: "removed" in b.text("[role=status]"))
        assert http("GET", f"/v1/containers/{cid}", unix=sock)[0] == 404

    @check("the overview counts the containers as the API lists them and reads the agent's metrics")
    def _():
        listed = json.loads(http("GET", "/v1/containers", unix=sock)[1])
        running = sum(1 for c in listed if c["state"] == "running")
        exited = sum(1 for c in listed if c["state"] == "exited")
        b.open(base + "/ui/")
        assert (b.text("#running"), b.text("#exited")) == (str(running), str(exited)), f"page {b.text('#running')}/{b.text('#exited')} api {running}/{exited}"
        metrics = b.text("#metrics")
        assert "Forks since the daemon started" in metrics and "Fork latency p50" in metrics, metrics
        b.screenshot("overview-with-containers")

    @check("a running and an exited container show what vmfork ps --json and docker inspect show")
    def _():
        out = subprocess.run([VMFORK, "container", "ps", "--all", "--json", "--state", os.path.dirname(sock)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        listed = {c["name"]: c for c in json.loads(out.stdout)}
        for name, docker_name, state in [("web.long", "long", "running"), ("web.short", "short", "exited")]:
            agent = listed[name]
            inspect = json.loads(docker("inspect", docker_name))[0]
            b.open(base + "/ui/containers/" + agent["id"])
            shown = {f: b.text(f"dd[data-field='{f}']") for f in ["id", "name", "state", "image", "exitCode", "hostname", "pool", "vch", "command"]}
            expected = {"id": agent["id"], "name": agent["name"], "state": agent["state"], "image": agent["image"],
                        "exitCode": "" if agent.get("exitCode") is None else str(agent["exitCode"]), "hostname": agent["hostname"],
                        "pool": agent.get("pool") or "", "vch": agent["labels"].get("vmfork.vch", ""),
                        "command": " ".join(f'"{a}"' if " " in a or not a else a for a in agent["arguments"])}
            assert shown == expected, f"{name}: page {shown} != vmfork ps --json {expected}"
            # Its own memory (the kernel's accounting of its VMs) while it runs, as ps --json
            # reads it (sleep touches no page between the two reads); none once it has ended.
            memory = agent.get("memory")
            if state == "running":
                assert memory and memory["vms"] >= 1 and memory["privateBytes"] > 0 and memory["sharedBytes"] > 0, f"{name}: memory {memory}"
                page_memory = b.text("dd[data-field='memory']")
                assert page_memory == f"{mib(memory['privateBytes'])} / {mib(memory['sharedBytes'])}", f"{name}: page memory {page_memory} != {memory}"
            else:
                assert memory is None and b.text("dd[data-field='memory']") == "", f"{name}: memory {memory}"
            assert shown["state"] == state == inspect["State"]["Status"], f"{name}: {shown['state']} / docker {inspect['State']['Status']}"
            assert inspect["Id"].startswith(shown["id"]) or shown["id"].startswith(inspect["Id"]), f"ids {inspect['Id']} {shown['id']}"
            assert inspect["Name"] == "/" + docker_name and inspect["Config"]["Image"] == shown["image"]
            assert inspect["Config"]["Cmd"] == agent["arguments"], f"docker Cmd {inspect['Config']['Cmd']} != {agent['arguments']}"
            assert inspect["Config"]["Hostname"] == shown["hostname"], f"hostname {inspect['Config']['Hostname']} {shown['hostname']}"
            if state == "exited":
                assert str(inspect["State"]["ExitCode"]) == shown["exitCode"] == "0"
                b.wait("the streamed logs", lambda: "hi from docker" in b.text("#logs") and "ended" in b.text("#logs-state"))
                b.screenshot("container-exited")
            else:
                b.screenshot("container-running")

    @check("stop from the container's row asks first, then the row says exited")
    def _():
        b.open(base + "/ui/containers?vch=web")
        b.click("tr[data-name='web.long'] a[aria-label='Stop web.long']")
        b.wait("the question", lambda: "Stop container web.long?" in b.text("#question"))
        b.screenshot("confirm-stop")
        b.click("#confirm")
        b.wait("the containers page", lambda: "/ui/containers" in b.url() and b.find_all("#containers-table"))
        row = "tr[data-name='web.long'] td.state"
        b.wait("web.long exited", lambda: b.text(row) == "exited", timeout=30)
        out = json.loads(docker("inspect", "long"))[0]
        assert out["State"]["Status"] == "exited", out["State"]

    @check("the events page follows the audit log live and filters it")
    def _():
        b.open(base + "/ui/events?type=container.create")
        before = len(b.find_all("#events-table tbody tr"))
        assert before >= 2, f"{before} container.create events shown"
        b.wait("following", lambda: "live" in b.text("#follow-state"))
        docker("run", "--name", "third", "busybox", "true")
        b.wait("a new row, added live", lambda: len(b.find_all("#events-table tbody tr")) > before)
        types = b.script("return [...document.querySelectorAll('#events-table tbody tr td:nth-child(3)')].map(td => td.textContent)")
        assert set(types) == {"container.create"}, types
        b.screenshot("events")

    @check("the agent's VCH listens again after a daemon restart")
    def _():
        restart_daemon()
        b.open(base + "/ui/vchs")
        b.wait("VCH web running", lambda: b.text("tr[data-vch='web'] td:nth-child(3)") == "running")
        names = docker("ps", "-a", "--format", "{{.Names}} {{.State}}").split("\n")
        assert "long exited" in names and "short exited" in names, names

    @check("a VCH with containers is not deleted unless forced")
    def _():
        b.open(base + "/ui/vchs")
        b.click("a[aria-label='Delete web']")
        b.wait("the question", lambda: "Delete VCH web?" in b.text("#question"))
        b.click("#confirm")
        b.wait("the refusal", lambda: "container" in b.text(".error[role=alert]"))
        assert http("GET", "/v1/vchs/web", unix=sock)[0] == 200
        b.screenshot("vch-delete-refused")
        b.click("#force")
        b.click("#confirm")
        b.wait("the VCH list without web", lambda: "Deleted VCH web" in b.text("[role=status]"))
        assert http("GET", "/v1/vchs/web", unix=sock)[0] == 404

    @check("pulling shows the agent's answer, and the images page lists parents with an evict that asks first")
    def _():
        b.open(base + "/ui/images")
        b.type("#reference", "127.0.0.1:1/nothing:latest")
        b.click("#pull-form button[type=submit]")
        b.wait("the pull's answer", lambda: b.find_all("#pull-result") and "failed" in b.text("#pull-result"), timeout=60)
        # A real pull from a registry on loopback (scripts/local-registry.sh), when its parts are installed.
        if shutil.which("docker-registry") and shutil.which("skopeo") and shutil.which("umoci"):
            folder = tempfile.mkdtemp(prefix="vmfork-ui-registry-")
            out = subprocess.run(["bash", "scripts/local-registry.sh", folder], capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            registry_port, registry_pid = out.stdout.split()[:2]
            try:
                b.type("#reference", f"127.0.0.1:{registry_port}/busybox:latest")
                b.type("#pull-name", "pulled")
                b.click("#pull-form button[type=submit]")
                b.wait("the pull done", lambda: b.find_all("#pull-result") and "Pulled" in b.text("#pull-result"), timeout=120)
                assert b.find_all("section.image h2#image-pulled"), "the pulled image is not listed"
                status, text = http("GET", "/v1/images/pulled", unix=sock)
                assert status == 200, text
            finally:
                os.kill(int(registry_pid), signal.SIGTERM)
                shutil.rmtree(folder, ignore_errors=True)
        # A slow registry: the form shows the agent's own figures of the pull while it runs.
        registry_port, server = slow_registry()
        try:
            b.type("#reference", f"127.0.0.1:{registry_port}/slow:latest")
            b.type("#pull-name", "slow")
            b.click("#pull-form button[type=submit]")
            seen = b.wait("the layer's bytes arriving", lambda: b.script(
                "var p = document.getElementById('pull-bar'); return p && p.value > 0 && p.value < p.max ? [p.value, p.max] : null"), timeout=30)
            text = b.text("#pull-progress-text")
            assert "downloading layers" in text and " of " in text, text
            b.screenshot("pull-progress")
            b.wait("the slow pull done", lambda: b.find_all("#pull-result") and f"Pulled 127.0.0.1:{registry_port}/slow" in b.text("#pull-result"), timeout=60)
            assert http("GET", "/v1/images/slow", unix=sock)[0] == 200
            assert json.loads(http("GET", "/v1/pulls", unix=sock)[1]) == [], "a pull still listed as in flight"
            print(f"ui-test: the pull was seen at {seen[0]} of {seen[1]} bytes", flush=True)
        finally:
            server.shutdown()
        assert b.find_all("section.image"), "no image listed"
        evict = b.find_all("a[aria-label^='Evict']")
        assert evict, "no warm parent with an Evict control"
        b.click("a[aria-label^='Evict']")
        b.wait("the question", lambda: "Evict warm parent" in b.text("#question"))
        b.screenshot("images")


if __name__ == "__main__":
    sys.exit(main())
