"""A development OAuth 2.0 / OIDC issuer for the local stack: never part of a deployment.

It signs client-credentials tokens with an RSA key kept in `--key-dir` (made on first start)
and publishes the public half as a JWKS, so the local gateway verifies its tokens exactly as it
verifies a real identity provider's. It authenticates no one: any `client_id` gets a token for
the tenant of that name. `make token TENANT=...` asks it for one.

    python -m mailstack_stubs.issuer --port 8103 --key-dir .stack/dev-issuer --audience A
"""

import argparse
import hashlib
import json
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Form, HTTPException

ALGORITHM = "RS256"
TOKEN_SECONDS = 3600
DEFAULT_SCOPE = "emails:send emails:read"


@dataclass(frozen=True)
class SigningKey:
    private: rsa.RSAPrivateKey
    kid: str

    def jwk(self) -> dict[str, Any]:
        public: dict[str, Any] = json.loads(
            jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key())
        )
        return public | {"kid": self.kid, "use": "sig", "alg": ALGORITHM}


def load_or_create_key(key_dir: Path) -> SigningKey:
    """The issuer's key from `key_dir/private.pem`, made (owner-readable only) if missing."""
    path = key_dir / "private.pem"
    if path.exists():
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(loaded, rsa.RSAPrivateKey)
        private = loaded
    else:
        key_dir.mkdir(parents=True, exist_ok=True)
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_bytes(pem)
        tmp.replace(path)
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SigningKey(private, hashlib.sha256(der).hexdigest()[:16])


def create_app(key: SigningKey, issuer: str, audience: str) -> FastAPI:
    app = FastAPI(title="mailstack development issuer", docs_url=None, redoc_url=None)

    @app.get("/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        return {
            "issuer": issuer,
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "token_endpoint": f"{issuer}/oauth/token",
            "grant_types_supported": ["client_credentials"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
        }

    @app.get("/.well-known/jwks.json")
    async def jwks() -> dict[str, Any]:
        return {"keys": [key.jwk()]}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/oauth/token")
    async def token(
        grant_type: Annotated[str, Form()],
        client_id: Annotated[str, Form()],
        scope: Annotated[str, Form()] = DEFAULT_SCOPE,
    ) -> dict[str, Any]:
        if grant_type != "client_credentials":
            raise HTTPException(400, detail={"error": "unsupported_grant_type"})
        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": audience,
            "sub": client_id,
            "tenant": client_id,
            "scope": scope,
            "iat": now,
            "exp": now + TOKEN_SECONDS,
        }
        access_token = jwt.encode(
            claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid}
        )
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": TOKEN_SECONDS,
            "scope": scope,
        }

    return app


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> None:
    # uvicorn re-raises the SIGTERM it handled once it has shut down: a clean stop, status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    parser = argparse.ArgumentParser(prog="mailstack-dev-issuer", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8103)
    parser.add_argument("--key-dir", type=Path, required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--issuer", help="the `iss` of its tokens (default: http://HOST:PORT)")
    args = parser.parse_args(argv)
    issuer = args.issuer or f"http://{args.host}:{args.port}"
    app = create_app(load_or_create_key(args.key_dir), issuer, args.audience)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
