#!/usr/bin/env python3
"""Prints a JWT for the office-hours example, as the university's identity
provider would issue one: HS256, signed with $ADVISOR_JWT_SECRET, valid for an
hour. Standard library only.

    python3 examples/office-hours/advisor-token.py [SUBJECT] [ROLE]   # default: ada advisor
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import time


def part(data: dict) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


subject = sys.argv[1] if len(sys.argv) > 1 else "ada"
role = sys.argv[2] if len(sys.argv) > 2 else "advisor"
secret = os.environ.get("ADVISOR_JWT_SECRET")
if not secret:
    sys.exit("set ADVISOR_JWT_SECRET to the secret the server was started with")
now = int(time.time())
signing_input = part({"alg": "HS256", "typ": "JWT"}) + "." + part(
    {"sub": subject, "role": role, "iat": now, "exp": now + 3600}
)
signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
print(signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode())
