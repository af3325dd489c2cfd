"""The embedded stack's development identity provider: real signed tokens, no server.

On first use it makes an ES256 key pair in the stack's state dir
(`<state>/identity/issuer-key.pem`, mode 0600) and publishes the public half as a
JWKS file the services are pointed at (`SCHIZODOT_AUTH_JWKS_FILE`). `mint` signs a
token for one of the named development users: one per role in the clinic
`dev-clinic`, and a second clinic `other-clinic` for tests of clinic scoping.

    python -m schizodot.cli token --user dev-clinician      # prints a token

docker compose runs this file on its own (it needs only PyJWT and cryptography,
which the API images carry) as the `dev-issuer` step: `init` makes the keys in a
volume and publishes the JWKS to the volume the APIs read, and

    docker compose run --rm dev-issuer token --user dev-clinician

prints a token for compose users.

It is for the embedded stack, compose and tests only: a deployment points
`SCHIZODOT_AUTH_ISSUER`, `SCHIZODOT_AUTH_AUDIENCE` and `SCHIZODOT_AUTH_JWKS_URL` at
its OIDC provider (docs/security.md, "Getting a token").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "https://dev-issuer.schizodot.invalid"
AUDIENCE = "schizodot"
ALGORITHM = "ES256"
DEV_CLINIC = "dev-clinic"
OTHER_CLINIC = "other-clinic"


@dataclass(frozen=True)
class DevUser:
    name: str
    role: str
    clinic: str | None
    display: str


USERS = {u.name: u for u in (
    DevUser("dev-uploader", "uploader", DEV_CLINIC, "Clinic app (development)"),
    DevUser("dev-clinician", "clinician", DEV_CLINIC, "Dr Dev Clinician"),
    DevUser("dev-admin", "clinic_admin", DEV_CLINIC, "Dev Clinic Admin"),
    DevUser("dev-ehr", "ehr_integration", DEV_CLINIC, "EHR integration (development)"),
    DevUser("dev-operator", "operator", None, "Dev Operator"),
    DevUser("other-uploader", "uploader", OTHER_CLINIC, "Other clinic's app"),
    DevUser("other-clinician", "clinician", OTHER_CLINIC, "Dr Other Clinician"),
    DevUser("other-admin", "clinic_admin", OTHER_CLINIC, "Other Clinic Admin"),
    DevUser("other-ehr", "ehr_integration", OTHER_CLINIC, "Other clinic's EHR"),
)}


class DevIssuer:
    def __init__(self, state_dir: Path) -> None:
        self.folder = Path(state_dir) / "identity"
        self.key_path = self.folder / "issuer-key.pem"
        self.jwks_path = self.folder / "jwks.json"

    def ensure(self) -> "DevIssuer":
        """Make the key pair and the JWKS once (kept across restarts of the stack)."""
        if self.key_path.exists() and self.jwks_path.exists():
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        descriptor = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(pem)
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        public.update({"kid": f"dev-{uuid.uuid4().hex[:8]}", "alg": ALGORITHM, "use": "sig"})
        self.jwks_path.write_text(json.dumps({"keys": [public]}, indent=2))
        return self

    @property
    def kid(self) -> str:
        return json.loads(self.jwks_path.read_text())["keys"][0]["kid"]

    def mint(self, user: str, lifetime: int = 3600, **overrides: object) -> str:
        """A token for a development user (`overrides` replace claims, for tests)."""
        if user not in USERS:
            raise KeyError(f"no development user {user!r}; choose one of {', '.join(USERS)}")
        self.ensure()
        who = USERS[user]
        now = int(time.time())
        claims: dict[str, object] = {"iss": ISSUER, "aud": AUDIENCE, "sub": who.name, "iat": now, "nbf": now,
                                     "exp": now + lifetime, "name": who.display, "schizodot_role": who.role}
        if who.clinic:
            claims["schizodot_clinic"] = who.clinic
        claims.update(overrides)
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": self.kid})  # type: ignore[arg-type]

    def environment(self) -> dict[str, str]:
        """What the services need to check these tokens."""
        self.ensure()
        return {"SCHIZODOT_AUTH_ISSUER": ISSUER, "SCHIZODOT_AUTH_AUDIENCE": AUDIENCE,
                "SCHIZODOT_AUTH_JWKS_FILE": str(self.jwks_path.resolve())}


def main(argv: list[str] | None = None) -> int:
    """`init` (keys, and the JWKS published where the APIs read it) and `token`, for compose."""
    parser = argparse.ArgumentParser(description="SchizoDot's development token issuer (not for production)")
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("SCHIZODOT_DEV_ISSUER_DIR", ".stack")),
                        help="where the keys live (default $SCHIZODOT_DEV_ISSUER_DIR or .stack)")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="make the key pair once; copy the public JWKS to --publish")
    init.add_argument("--publish", type=Path, default=None, help="a JWKS file for the APIs (no private key)")
    token = sub.add_parser("token", help="print a signed token for a development user")
    token.add_argument("--user", required=True, choices=sorted(USERS))
    token.add_argument("--lifetime", type=int, default=3600, help="seconds")
    args = parser.parse_args(argv)
    issuer = DevIssuer(args.dir)
    if args.command == "token":
        if not issuer.jwks_path.exists():
            print(f"no development issuer in {args.dir}: run `init` first", file=sys.stderr)
            return 2
        print(issuer.mint(args.user, lifetime=args.lifetime))
        return 0
    issuer.ensure()
    if args.publish is not None:
        args.publish.parent.mkdir(parents=True, exist_ok=True)
        partial = args.publish.with_name(f".{args.publish.name}.partial")
        partial.write_text(issuer.jwks_path.read_text())
        os.replace(partial, args.publish)  # the APIs never read half a file
    print(f"development issuer {ISSUER} (key id {issuer.kid}); JWKS at {args.publish or issuer.jwks_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
