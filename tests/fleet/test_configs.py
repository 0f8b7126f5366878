"""
The files of docker/ checked without a container engine (none runs on these
machines): haproxy's own config check, nats-server's (-t) with the
environment docker-compose.yml gives each server, the compose file's
structure against the other files, rtgate.env against rtgate's options, the
Grafana dashboard's queries against the metrics rtgate and haproxy really
export, the image's runtime packages against what the binaries link, and the
image's health check against a running gateway.
"""
import glob
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
DOCKER = os.path.join(ROOT, "docker")
BASE_PACKAGES = {"libc6", "libgcc-s1"}  # in debian:12-slim already


def rtgate_bin():
    b = os.environ.get("RTGATE_BIN")
    if not b:
        pytest.exit("RTGATE_BIN is not set", returncode=2)
    return b


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def compose():
    with open(os.path.join(DOCKER, "docker-compose.yml")) as f:
        return yaml.safe_load(f)


def env_file(name):
    out = {}
    with open(os.path.join(DOCKER, name)) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, sep, v = line.partition("=")
                assert sep and k == k.strip() and " " not in v, "not KEY=value: %r" % line
                out[k] = v
    return out


def option_names():
    r = subprocess.run([rtgate_bin(), "--help"], capture_output=True, timeout=10)
    return set(re.findall(r"^  --([a-z0-9-]+)", r.stdout.decode(), re.M))


class Proc:
    """A process started here and stopped by pid."""

    def __init__(self, argv, env=None):
        self.p = subprocess.Popen(argv, env=dict(os.environ, **(env or {})),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        return self.p.stdout.read().decode("utf-8", "replace")


def http_get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def wait_http(url, proc, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.p.poll() is None, "exited: %s" % proc.stop()
        try:
            return http_get(url)
        except OSError:
            time.sleep(0.05)
    raise AssertionError("no answer from %s" % url)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """rtgate with the recipe's rtgate.env (memory engine: no NATS here; the
    session secret a file of the test's instead of the container's secret)."""
    port = free_port()
    env = {k: v for k, v in env_file("rtgate.env").items() if k != "RTGATE_NATS"}
    env["RTGATE_LISTEN"] = "127.0.0.1:%d" % port
    secret = tmp_path_factory.mktemp("secret") / "session-secret"
    secret.write_bytes(os.urandom(48).hex().encode())
    env["RTGATE_SESSION_SECRET"] = str(secret)
    g = Proc([rtgate_bin()], env)
    wait_http("http://127.0.0.1:%d/healthz" % port, g)
    g.port = port
    yield g
    log = g.stop()
    for k in env:
        assert "event=env_ignored name=%s " % k not in log, log


def test_haproxy_config_is_valid_for_compose_and_loopback():
    cfg = os.path.join(DOCKER, "haproxy.cfg")
    r = subprocess.run(["haproxy", "-c", "-f", cfg], capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr.decode()
    env = dict(os.environ, HAPROXY_BIND="127.0.0.1:1", HAPROXY_STATS_BIND="127.0.0.1:2",
               RTGATE_1="127.0.0.1:3", RTGATE_2="127.0.0.1:4")
    r = subprocess.run(["haproxy", "-c", "-f", cfg], capture_output=True, timeout=20, env=env)
    out = r.stdout.decode() + r.stderr.decode()
    assert r.returncode == 0 and "WARNING" not in out, out


def test_nats_configs_are_valid_with_the_compose_environment():
    services = compose()["services"]
    for n in (1, 2, 3):
        svc = services["nats-%d" % n]
        mount = "./nats-%d.conf:/etc/nats/nats.conf:ro" % n
        assert mount in svc["volumes"], svc
        env = dict(os.environ, **{k: str(v) for k, v in svc["environment"].items()})
        r = subprocess.run(["nats-server", "-c", os.path.join(DOCKER, "nats-%d.conf" % n), "-t"],
                           capture_output=True, timeout=20, env=env)
        assert r.returncode == 0, (n, r.stdout.decode(), r.stderr.decode())
        with open(os.path.join(DOCKER, "nats-%d.conf" % n)) as f:
            conf = f.read()
        assert "server_name: nats-%d" % n in conf
        routes = re.search(r"routes: \[(.*)\]", conf).group(1)
        assert sorted(re.findall(r"\$NATS_ROUTE_(\d)", routes)) == \
            [str(m) for m in (1, 2, 3) if m != n], routes


def test_compose_file_matches_the_other_files():
    c = compose()
    s = c["services"]
    assert set(s) == {"nats-1", "nats-2", "nats-3", "rtgate-1", "rtgate-2", "haproxy",
                      "prometheus", "grafana"}
    env = env_file("rtgate.env")
    assert env["RTGATE_NATS"] == ",".join("nats://nats-%d:4222" % n for n in (1, 2, 3))
    assert env["RTGATE_NATS_REPLICAS"] == "3"
    drain_s = int(env["RTGATE_DRAIN_TIMEOUT_MS"]) / 1000
    for n in (1, 2):
        g = s["rtgate-%d" % n]
        assert g["env_file"] == "rtgate.env" and g["environment"]["RTGATE_NODE_ID"] == \
            "rtgate-%d" % n
        assert int(g["stop_grace_period"].rstrip("s")) > drain_s, "docker would SIGKILL the drain"
        assert g["build"]["dockerfile"] == "docker/Dockerfile"
        assert g["secrets"] == ["session_secret"], "the nodes share the SSE session secret"
    assert env["RTGATE_SESSION_SECRET"] == "/run/secrets/session_secret"
    assert c["secrets"] == {"session_secret": {"file": "./session-secret"}}
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in s["haproxy"]["volumes"]
    # The gateways believe X-Forwarded-For from haproxy's fixed address only.
    haproxy_ip = s["haproxy"]["networks"]["default"]["ipv4_address"]
    assert env["RTGATE_TRUSTED_PROXY"] == haproxy_ip
    subnet = c["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(haproxy_ip) in ipaddress.ip_network(subnet)
    with open(os.path.join(DOCKER, "haproxy.cfg")) as f:
        hcfg = f.read()
    assert '"${RTGATE_1-rtgate-1:8080}"' in hcfg and '"${RTGATE_2-rtgate-2:8080}"' in hcfg
    assert "8080:8080" in s["haproxy"]["ports"]
    grace = int(env["RTGATE_DRAIN_GRACE_MS"])
    inter = int(re.search(r"inter (\d+)ms", hcfg).group(1))
    fall = int(re.search(r"fall (\d+)", hcfg).group(1))
    assert grace >= inter * (fall + 1), "the grace must outlast haproxy's detection"
    with open(os.path.join(DOCKER, "prometheus.yml")) as f:
        prom = yaml.safe_load(f)
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    assert {"rtgate-1:8080", "rtgate-2:8080", "haproxy:8404"} <= targets
    mounts = " ".join(s["prometheus"]["volumes"] + s["grafana"]["volumes"])
    assert "./prometheus.yml:" in mounts and "./grafana/dashboards:" in mounts
    with open(os.path.join(DOCKER, "grafana/provisioning/datasources/prometheus.yml")) as f:
        ds = yaml.safe_load(f)["datasources"][0]
    assert ds["url"] == "http://prometheus:9090"
    with open(os.path.join(DOCKER, "grafana/dashboards/rtgate.json")) as f:
        dash = json.load(f)
    uids = {t["datasource"]["uid"] for p in dash["panels"] for t in p["targets"]}
    assert uids == {ds["uid"]}


def test_rtgate_env_names_only_options():
    names = option_names()
    for k in env_file("rtgate.env"):
        opt = k[len("RTGATE_"):].lower().replace("_", "-")
        assert k.startswith("RTGATE_") and opt in names, "%s is not an rtgate option" % k


def test_dashboard_queries_name_exported_metrics(gateway, tmp_path):
    with open(os.path.join(DOCKER, "grafana/dashboards/rtgate.json")) as f:
        dash = json.load(f)
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    _, body = http_get("http://127.0.0.1:%d/metrics" % gateway.port)
    families = set(re.findall(r"^# TYPE (\S+)", body, re.M))
    for name in set(re.findall(r"\brtgate_[a-z_]+", exprs)):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in families or base in families, "the dashboard queries %s" % name
    # haproxy's exporter, from the recipe's haproxy.cfg on loopback.
    stats = free_port()
    h = Proc(["haproxy", "-f", os.path.join(DOCKER, "haproxy.cfg")],
             {"HAPROXY_BIND": "127.0.0.1:%d" % free_port(),
              "HAPROXY_STATS_BIND": "127.0.0.1:%d" % stats,
              "RTGATE_1": "127.0.0.1:%d" % gateway.port, "RTGATE_2": "127.0.0.1:%d" % gateway.port})
    try:
        _, hbody = wait_http("http://127.0.0.1:%d/metrics" % stats, h)
    finally:
        h.stop()
    for name in set(re.findall(r"\bhaproxy_[a-z_]+", exprs)):
        assert "# TYPE %s " % name in hbody, "the dashboard queries %s" % name


def test_healthcheck_script(gateway):
    hc = os.path.join(DOCKER, "healthcheck.sh")
    assert subprocess.run([hc, str(gateway.port)], timeout=10).returncode == 0
    r = subprocess.run([hc], timeout=10, capture_output=True,
                       env=dict(os.environ, RTGATE_LISTEN="127.0.0.1:%d" % gateway.port))
    assert r.returncode == 0
    assert subprocess.run([hc, str(free_port())], timeout=10,
                          capture_output=True).returncode != 0


def packages_of(sonames):
    """{soname: Debian package} of the x86-64 libraries the loader would use (one
    pass over dpkg's file lists: `dpkg -S` takes a second a name)."""
    r = subprocess.run(["ldconfig", "-p"], capture_output=True, timeout=30)
    paths = {}
    for so in sonames:
        m = re.search(r"^\s+%s \(libc6,x86-64[^)]*\) => (\S+)" % re.escape(so),
                      r.stdout.decode(), re.M)
        assert m, "the loader does not know %s" % so
        path = os.path.realpath(m.group(1))
        # Debian 12 has a merged /usr: dpkg may know either spelling.
        other = path[4:] if path.startswith("/usr/") else "/usr" + path
        paths[path] = paths[other] = so
    lists = glob.glob("/var/lib/dpkg/info/*.list")
    r = subprocess.run(["grep", "-HFx", "-f", "/dev/stdin", *lists], input="\n".join(paths).encode(),
                       capture_output=True, timeout=60)
    out = {}
    for line in r.stdout.decode().splitlines():
        listfile, _, path = line.partition(".list:")
        out[paths[path]] = os.path.basename(listfile).split(":")[0]
    missing = set(sonames) - set(out)
    assert not missing, "no package owns %s" % missing
    return out


@pytest.mark.skipif(not shutil.which("dpkg"), reason="not a Debian system")
def test_image_installs_what_the_programs_link():
    with open(os.path.join(DOCKER, "Dockerfile")) as f:
        df = f.read()
    runtime = df[df.rindex("FROM debian:12-slim"):]
    listed = set(re.search(r"--no-install-recommends\s+([^&]*)&&", runtime, re.S).group(1)
                 .replace("\\", " ").split())
    r = subprocess.run(["apt-cache", "depends", *sorted(listed)], capture_output=True, timeout=60)
    deps = set(re.findall(r"^\s+Depends: (\S+)", r.stdout.decode(), re.M))
    bindir = os.path.dirname(os.path.dirname(rtgate_bin()))
    progs = [rtgate_bin(), os.path.join(bindir, "tools", "rtgate-pub"),
             os.path.join(bindir, "loadtest", "rtgate-load"),
             "/usr/lib/x86_64-linux-gnu/libwebsockets-evlib_uv.so"]
    needed = {}
    for prog in progs:
        if not os.path.exists(prog):
            continue
        r = subprocess.run(["readelf", "-d", prog], capture_output=True, timeout=30)
        for lib in re.findall(r"\(NEEDED\)\s+Shared library: \[(\S+)\]", r.stdout.decode()):
            if not lib.startswith(("libasan", "libubsan")):  # the sanitizer build's
                needed.setdefault(lib, prog)
    for lib, owner in packages_of(needed).items():
        assert owner in listed | deps | BASE_PACKAGES, \
            "%s needs %s (package %s), which the runtime image does not install" % (
                needed[lib], lib, owner)
    assert "libwebsockets-evlib-uv" in listed, "without the plugin lws cannot use libuv"
