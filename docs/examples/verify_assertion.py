#!/usr/bin/env python3
"""Verify oidc-gateway's identity assertion in an upstream, with PyJWT (pip install "pyjwt[crypto]").

In an application, read the token from the request header the gateway sets, e.g. in Flask:
    claims = verify(request.headers["X-Gateway-Assertion"], JWKS_URL, ISSUER, AUDIENCE)

As a command (tests/e2e/identity_assertion.rs runs it so):
    verify_assertion.py JWKS_URL ISSUER AUDIENCE TOKEN
prints the verified claims as JSON, or exits 1 with the reason.
"""
import json
import sys

import jwt

_clients = {}


def verify(token, jwks_url, issuer, audience):
    """The assertion's claims, once signature, issuer, audience and expiry check out."""
    client = _clients.setdefault(jwks_url, jwt.PyJWKClient(jwks_url, cache_keys=True))
    key = client.get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        issuer=issuer,
        audience=audience,
        options={"require": ["iss", "aud", "sub", "iat", "exp"]},
    )


if __name__ == "__main__":
    jwks_url, issuer, audience, token = sys.argv[1:5]
    try:
        print(json.dumps(verify(token, jwks_url, issuer, audience)))
    except jwt.PyJWTError as e:
        print(f"refused: {e}", file=sys.stderr)
        sys.exit(1)
