"""
TLS certificates and NATS credentials made at test time, for the tests of
--nats-ca, --nats-tls-cert/--nats-tls-key, --nats-creds and --nats-nkey.

Certificates come from the `openssl` command line (a CA, a server
certificate for 127.0.0.1 and localhost, a client certificate, and a second
CA nobody trusts). NKeys and JWTs are made here with Debian's
python3-cryptography: an NKey is base32 of a prefix, the ed25519 key and a
CRC-16/XMODEM; a NATS JWT is header.claims.signature in base64url, signed
with the issuer's NKey ("ed25519-nkey"). That is enough for nats-server's
operator mode with the memory resolver, without nsc or nk.
"""
import base64
import hashlib
import json
import os
import subprocess
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# ---------------------------------------------------------------- TLS


def _openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


class Certs:
    """PEM files under dir: ca.pem, server.pem/.key, client.pem/.key, wrong-ca.pem."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        p = self.path
        for ca in ("ca", "wrong-ca"):
            _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-nodes", "-keyout", p(ca + ".key"), "-out", p(ca + ".pem"), "-days", "2",
                     "-subj", "/CN=rtgate test %s" % ca)
        self._leaf("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                             "extendedKeyUsage=serverAuth\n")
        self._leaf("client", "extendedKeyUsage=clientAuth\n")

    def path(self, name):
        return os.path.join(self.dir, name)

    def _leaf(self, name, ext):
        p = self.path
        with open(p(name + ".ext"), "w") as f:
            f.write(ext)
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", p(name + ".key"), "-out", p(name + ".csr"), "-subj",
                 "/CN=rtgate test %s" % name)
        _openssl("x509", "-req", "-in", p(name + ".csr"), "-CA", p("ca.pem"), "-CAkey",
                 p("ca.key"), "-CAcreateserial", "-out", p(name + ".pem"), "-days", "2",
                 "-extfile", p(name + ".ext"))

    def server_tls(self, verify_clients=False):
        """nats-server's tls block: every client connection must be TLS."""
        return ('tls { cert_file: "%s", key_file: "%s", ca_file: "%s", verify: %s, timeout: 3 }'
                % (self.path("server.pem"), self.path("server.key"), self.path("ca.pem"),
                   "true" if verify_clients else "false"))


# ---------------------------------------------------------------- NKeys and JWTs

_PREFIX = {"O": 14 << 3, "A": 0, "U": 20 << 3}
_PREFIX_SEED = 18 << 3


def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _encode(raw):
    c = crc16(raw)
    return base64.b32encode(raw + bytes([c & 0xFF, c >> 8])).decode().rstrip("=")


def _b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class NKey:
    """A fresh ed25519 key of one kind: O(perator), A(ccount) or U(ser)."""

    def __init__(self, kind):
        seed = os.urandom(32)
        self.key = Ed25519PrivateKey.from_private_bytes(seed)
        raw_pub = self.key.public_key().public_bytes(serialization.Encoding.Raw,
                                                     serialization.PublicFormat.Raw)
        t = _PREFIX[kind]
        self.public = _encode(bytes([t]) + raw_pub)
        self.seed = _encode(bytes([_PREFIX_SEED | t >> 5, (t & 31) << 3]) + seed)

    def sign(self, data):
        return self.key.sign(data)


def jwt(issuer, subject, name, nats):
    """A NATS v2 JWT for `subject` (a public NKey), signed by `issuer` (an NKey)."""
    claims = {"jti": "", "iat": int(time.time()), "iss": issuer.public, "name": name,
              "sub": subject, "nats": dict(nats, version=2)}
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head = _b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64url(json.dumps(claims).encode())
    return head + "." + body + "." + _b64url(issuer.sign((head + "." + body).encode()))


_UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
              "wildcards": True, "conn": -1, "leaf": -1}


def creds_text(user_jwt, user_seed):
    """A .creds file, laid out as nsc writes one."""
    return ("-----BEGIN NATS USER JWT-----\n%s\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            "-----BEGIN USER NKEY SEED-----\n%s\n------END USER NKEY SEED------\n\n"
            "*************************************************************\n"
            % (user_jwt, user_seed))


class Operator:
    """An operator, a system account and an application account with JetStream;
    users of that account get .creds files from user_creds()."""

    def __init__(self):
        self.op, self.sys, self.acc = NKey("O"), NKey("A"), NKey("A")
        self.op_jwt = jwt(self.op, self.op.public, "rtgate-test-operator",
                          {"type": "operator", "system_account": self.sys.public})
        self.sys_jwt = jwt(self.op, self.sys.public, "SYS",
                           {"type": "account", "limits": _UNLIMITED})
        js = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
        self.acc_jwt = jwt(self.op, self.acc.public, "app",
                           {"type": "account", "limits": dict(_UNLIMITED, **js)})

    def server_config(self):
        """nats-server lines: trust the operator, accounts preloaded in memory."""
        return ['operator: "%s"' % self.op_jwt,
                "system_account: %s" % self.sys.public,
                "resolver: MEMORY",
                "resolver_preload: { %s: \"%s\", %s: \"%s\" }"
                % (self.sys.public, self.sys_jwt, self.acc.public, self.acc_jwt)]

    def user_creds(self, name, account=None):
        """(.creds text, user NKey) for a new user of the application account."""
        user = NKey("U")
        account = account or self.acc
        user_jwt = jwt(account, user.public, name,
                       {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1,
                        "payload": -1})
        return creds_text(user_jwt, user.seed), user
