"""Third-party client check: Python Authlib runs the code flow with PKCE against a running
habitus-oidc and validates the ID token against the published JWKS.

Usage: authlib_client.py ISSUER CLIENT_ID CLIENT_SECRET USER PASSWORD
The browser part (login form, collector batch) is done with requests, as a browser would.
"""
import json
import re
import sys

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.common.security import generate_token
from authlib.jose import JsonWebKey, jwt

issuer, client_id, secret, user, password = sys.argv[1:6]
meta = requests.get(issuer + "/.well-known/openid-configuration", timeout=10).json()
assert meta["issuer"] == issuer
jwks = JsonWebKey.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())

redirect = "http://127.0.0.1:9/cb"
client = OAuth2Session(client_id, secret, scope="openid profile", redirect_uri=redirect,
                       code_challenge_method="S256", token_endpoint_auth_method="client_secret_post")
verifier = generate_token(48)
nonce = generate_token(16)
url, state = client.create_authorization_url(meta["authorization_endpoint"], nonce=nonce,
                                             code_verifier=verifier)
# The browser: keeps the cookies the issuer sets (the login page binds its login to it).
browser = requests.Session()
page = browser.get(url, allow_redirects=False, timeout=10)
assert page.status_code == 200, page.text
tx = re.search(r'name="tx" value="([^"]+)"', page.text).group(1)
events = []
t = 1000.0
for pos in range(10):
    events.append({"type": "kd", "t": t, "pos": pos})
    events.append({"type": "ku", "t": t + 90.0, "pos": pos})
    t += 180.0
r = browser.post(issuer + "/collect", data=json.dumps({"tx": tx, "seq": 0, "events": events}),
                  headers={"Content-Type": "application/json"}, timeout=10)
assert r.status_code == 204, r.text
r = browser.post(issuer + "/login", data={"tx": tx, "username": user, "password": password},
                  allow_redirects=False, timeout=10)
assert r.status_code == 303, r.text
callback = r.headers["Location"]
token = client.fetch_token(meta["token_endpoint"], authorization_response=callback,
                           code_verifier=verifier)
claims = jwt.decode(token["id_token"], jwks,
                    claims_options={"iss": {"essential": True, "value": issuer},
                                    "aud": {"essential": True, "value": client_id},
                                    "nonce": {"essential": True, "value": nonce}})
claims.validate()
assert claims["sub"] == user
assert claims["acr"].startswith("urn:habitus:loa:")
assert "urn:habitus:behavior" in claims
info = client.get(meta["userinfo_endpoint"]).json()
assert info["sub"] == user and info["urn:habitus:behavior"] == claims["urn:habitus:behavior"], info
print("authlib ok:", claims["acr"], json.dumps(claims["urn:habitus:behavior"]))
