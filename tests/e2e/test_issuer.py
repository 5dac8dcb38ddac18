"""`serve --jwt-issuer`: tokens are taken by the rules of API Gateway's JWT
authorizer (issue 23), one token per rule against a real convo-local and a
small OpenID Connect issuer on loopback (its discovery document and key set
served over HTTP; tokens signed here with authlib)."""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import threading
import time

import pytest
from authlib.jose import JsonWebKey, jwt
from conftest import BIN, _clean_env, assert_error, free_port, unique


@pytest.fixture(scope="module")
def issuer():
    """An issuer at http://127.0.0.1:<port> with one RSA key (kid k1) and
    one EC key (kid e1) in its key set."""
    rsa = JsonWebKey.generate_key("RSA", 2048, {"kid": "k1", "use": "sig", "alg": "RS256"}, is_private=True)
    ec = JsonWebKey.generate_key("EC", "P-256", {"kid": "e1", "use": "sig", "alg": "ES256"}, is_private=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    documents = {
        "/.well-known/openid-configuration": {
            "issuer": url,
            "authorization_endpoint": url + "/authorize",
            "token_endpoint": url + "/token",
            "jwks_uri": url + "/jwks",
        },
        "/jwks": {"keys": [rsa.as_dict(is_private=False), ec.as_dict(is_private=False)]},
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            doc = documents.get(self.path)
            body = json.dumps(doc).encode()
            self.send_response(200 if doc else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield {"url": url, "rsa": rsa, "ec": ec}
    httpd.shutdown()


@pytest.fixture(scope="module")
def server(issuer, tmp_path_factory):
    from conftest import Server

    s = Server(tmp_path_factory.mktemp("issuer") / "data", "--jwt-issuer", issuer["url"],
               "--jwt-audience", "convo-api", in_memory=True)
    s.start()
    yield s
    s.stop()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def raw_rs256(issuer, header: dict, claims: dict) -> str:
    """A token with exactly this header (authlib would add a kid or refuse a
    crit), signed RS256 by the issuer's key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    signature = issuer["rsa"].get_private_key().sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64(signature)


def sign(issuer, claims: dict, alg="RS256", kid="k1", extra_header=None) -> str:
    key = issuer["rsa"] if alg.startswith("RS") else issuer["ec"]
    header = {"alg": alg, "kid": kid, **(extra_header or {})}
    return jwt.encode(header, claims, key).decode()


def claims(issuer, **over) -> dict:
    now = int(time.time())
    c = {"sub": unique("owner"), "iss": issuer["url"], "aud": "convo-api", "exp": now + 600, "iat": now - 5}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def call(server, token):
    from conftest import Client

    return Client(server.base_url, token).get("/conversations")


def test_a_token_by_the_rules_is_taken(server, issuer):
    status, _, body = call(server, sign(issuer, claims(issuer)))
    assert status == 200, body
    # The hand-signed form of the refusals below is a valid token itself.
    status, _, body = call(server, raw_rs256(issuer, {"alg": "RS256", "kid": "k1"}, claims(issuer)))
    assert status == 200, body
    # client_id stands in for aud when there is no aud (Cognito's access tokens).
    status, _, body = call(server, sign(issuer, claims(issuer, aud=None, client_id="convo-api")))
    assert status == 200, body
    status, _, body = call(server, sign(issuer, claims(issuer, aud=["other", "convo-api"], nbf=int(time.time()) - 5)))
    assert status == 200, body


@pytest.mark.parametrize("why,make", [
    ("aud wrong, client_id right", lambda i: sign(i, claims(i, aud="other", client_id="convo-api"))),
    ("no aud, no client_id", lambda i: sign(i, claims(i, aud=None))),
    ("nbf in the future", lambda i: sign(i, claims(i, nbf=int(time.time()) + 120))),
    ("iat in the future", lambda i: sign(i, claims(i, iat=int(time.time()) + 120))),
    ("an array iss", lambda i: sign(i, claims(i, iss=[i["url"]]))),
    ("another iss", lambda i: sign(i, claims(i, iss="https://evil.example"))),
    ("expired", lambda i: sign(i, claims(i, exp=int(time.time()) - 1))),
    ("ES256", lambda i: sign(i, claims(i), alg="ES256", kid="e1")),
    ("an unknown crit", lambda i: raw_rs256(i, {"alg": "RS256", "kid": "k1", "crit": ["x-convo"], "x-convo": 1}, claims(i))),
    ("no kid", lambda i: raw_rs256(i, {"alg": "RS256"}, claims(i))),
])
def test_a_token_api_gateway_refuses_is_refused(server, issuer, why, make):
    assert_error(call(server, make(issuer)), 401, "unauthorized")


def test_an_http_issuer_off_loopback_is_refused_at_start(tmp_path):
    out = subprocess.run(
        [BIN, "serve", "--in-memory", "--addr", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path),
         "--jwt-issuer", "http://issuer.example", "--jwt-audience", "convo-api"],
        capture_output=True, text=True, env=_clean_env(), timeout=30,
    )
    assert out.returncode != 0
    assert "https" in out.stderr, out.stderr
