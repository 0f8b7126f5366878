"""
Keys and JWTs for the auth tests, made with Debian's python3-jwt (PyJWT) and
python3-cryptography: an implementation independent of rtgate's verifier.
Hostile tokens (forged, alg none, the HS256-with-public-key confusion) are
put together by hand, since PyJWT refuses to make them.
"""
import base64
import hashlib
import hmac
import json
import os
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ALGS = ("HS256", "RS256", "ES256")


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class KeySet:
    """One signing key per algorithm and the files rtgate reads (in `where`)."""

    def __init__(self, where):
        self.where = str(where)
        self.secret = base64.b64encode(os.urandom(36))  # 48 printable bytes
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.files = {
            "HS256": self._write("hs256.secret", self.secret + b"\n"),
            "RS256": self._write("rs256.pub", self.public_pem("RS256")),
            "ES256": self._write("es256.pub", self.public_pem("ES256")),
        }

    def _write(self, name, data):
        path = os.path.join(self.where, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def public_pem(self, alg):
        key = self.rsa if alg == "RS256" else self.ec
        return key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)

    def signing_key(self, alg):
        return {"HS256": self.secret, "RS256": self.rsa, "ES256": self.ec}[alg]

    def flags(self, alg, *extra):
        return ["--jwt-key", self.files[alg], "--jwt-alg", alg] + list(extra)

    def token(self, alg, sub="alice", ttl=600, **claims):
        """A good token for alg; ttl None leaves exp out."""
        body = {"sub": sub, "iat": int(time.time())}
        if ttl is not None:
            body["exp"] = int(time.time()) + ttl
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.signing_key(alg), algorithm=alg)

    def key_material(self):
        """Strings that must never appear in a log: the secret and the PEM bodies."""
        out = [self.secret.decode()]
        for alg in ("RS256", "ES256"):
            out += [l for l in self.public_pem(alg).decode().splitlines()
                    if l and not l.startswith("-----")]
        return out


def hs256_by_hand(secret, header, claims):
    """An HS256 token over arbitrary header and claims (bytes or dicts)."""
    h = header if isinstance(header, (bytes, str)) else json.dumps(header)
    c = claims if isinstance(claims, (bytes, str)) else json.dumps(claims)
    signing_input = b64url(h) + "." + b64url(c)
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def bad_tokens(keys, alg):
    """{name: (token, fragment or tuple of fragments one of which the 401's
    message holds)} of every bad token of issue 15 for a server configured with alg."""
    good = keys.token(alg)
    head, body, sig = good.split(".")
    other = KeySet.__new__(KeySet)  # another key of the same kind, never written to disk
    other.secret = base64.b64encode(os.urandom(36))
    other.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other.ec = ec.generate_private_key(ec.SECP256R1())
    wrong_alg = "RS256" if alg != "RS256" else "ES256"
    claims = {"sub": "alice", "exp": int(time.time()) + 600}
    forged_body = b64url(json.dumps({"sub": "admin", "exp": int(time.time()) + 600,
                                     "pub_allow": [">"]}))
    out = {
        "forged": (head + "." + forged_body + "." + sig, "signature does not verify"),
        "expired": (keys.token(alg, ttl=-3600), "token expired"),
        "not_yet_valid": (keys.token(alg, nbf=int(time.time()) + 3600),
                          "not yet valid"),
        "wrong_key": (jwt.encode(claims, other.signing_key(alg), algorithm=alg),
                      "signature does not verify"),
        "wrong_alg": (keys.token(wrong_alg), "algorithm is not the one"),
        "alg_none": (b64url('{"alg":"none","typ":"JWT"}') + "." + b64url(json.dumps(claims))
                     + ".", "alg none"),
        # Cut inside the signature: too short, or its last character's padding bits set.
        "truncated": (good[:len(good) - 12], ("signature does not verify",
                                              "not three base64url parts")),
        "truncated_two_parts": (head + "." + body, "not three base64url parts"),
        "60kb": ("eyJ" + "A" * (60 * 1024), "longer than 8192"),
        "not_json": (hs256_by_hand(keys.secret, '{"alg":"%s"}' % alg, b"not json")
                     if alg == "HS256" else b64url("not json") + "." + body + "." + sig,
                     "claims are not a JSON object" if alg == "HS256"
                     else "header is not a JSON object"),
        "bad_base64": (head + "." + body + "." + sig[:-4] + "+/=%", "not three base64url"),
        "garbage": ("hello world", "not three base64url parts"),
    }
    # The libjwt 1.10 confusion: HS256 signed with the public key PEM as secret.
    if alg != "HS256":
        out["hs256_with_public_pem"] = (hs256_by_hand(keys.public_pem(alg),
                                                      {"alg": "HS256", "typ": "JWT"}, claims),
                                        "algorithm is not the one")
    return out
