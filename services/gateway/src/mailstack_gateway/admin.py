"""`mailstack-admin`: create tenants, and create, list and revoke their API keys.

A new key is printed once, alone on the last line of the output; only its hash is stored.
Reads DATABASE_URL from the environment.
"""

import argparse
import sys
from collections.abc import Sequence
from datetime import timedelta

from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import create_engine

from mailstack_core.database import normalize_database_url
from mailstack_gateway.auth import ALL_SCOPES, Scope
from mailstack_gateway.keys import KeyAdmin, UnknownKeyError, UnknownTenantError

# What a key gets when no --scope is given: send and read its tenant's email, nothing more.
DEFAULT_SCOPES = (Scope.SEND, Scope.READ)


class AdminSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str


def _say(line: str) -> None:
    sys.stdout.write(f"{line}\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailstack-admin", description=__doc__)
    kinds = parser.add_subparsers(dest="kind", required=True)

    tenant = kinds.add_parser("tenants", help="tenants").add_subparsers(
        dest="action", required=True
    )
    create_tenant = tenant.add_parser("create", help="create a tenant if it does not exist")
    create_tenant.add_argument("tenant")
    create_tenant.add_argument("--send-per-minute", type=int)
    create_tenant.add_argument("--read-per-minute", type=int)

    keys = kinds.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="api key")
    create.add_argument(
        "--scope",
        action="append",
        choices=sorted(scope.value for scope in ALL_SCOPES),
        help=f"repeat for several (default: {' '.join(s.value for s in DEFAULT_SCOPES)})",
    )
    create.add_argument("--expires-in-days", type=float)
    create.add_argument("--create-tenant", action="store_true", help="create the tenant if needed")
    listing = keys.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--tenant")
    revoke = keys.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    return parser


def _run(args: argparse.Namespace, admin: KeyAdmin) -> None:
    if args.kind == "tenants":
        created = admin.ensure_tenant(args.tenant, args.send_per_minute, args.read_per_minute)
        _say(f"tenant {args.tenant} {'created' if created else 'already exists'}")
    elif args.action == "create":
        if args.create_tenant and admin.ensure_tenant(args.tenant):
            _say(f"tenant {args.tenant} created")
        scopes = [Scope(value) for value in args.scope] if args.scope else list(DEFAULT_SCOPES)
        expires = timedelta(days=args.expires_in_days) if args.expires_in_days else None
        key_id, new = admin.create_key(args.tenant, args.name, scopes, expires)
        _say(f"key {key_id} for tenant {args.tenant}, scopes {' '.join(sorted(scopes))}")
        _say("shown once; store it now:")
        _say(new.token)
    elif args.action == "list":
        _say("id\ttenant\tname\tscopes\tcreated\texpires\trevoked\tlast used")
        for key in admin.list_keys(args.tenant):
            fields = (key.created_at, key.expires_at, key.revoked_at, key.last_used_at)
            times = "\t".join(value.isoformat() if value else "-" for value in fields)
            _say(f"{key.key_id}\t{key.tenant_id}\t{key.name}\t{','.join(key.scopes)}\t{times}")
    else:
        admin.revoke_key(args.key_id)
        _say(f"key {args.key_id} revoked")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = AdminSettings()  # the database comes from the environment
    engine = create_engine(normalize_database_url(settings.database_url))
    try:
        _run(args, KeyAdmin(engine))
    except (UnknownTenantError, UnknownKeyError) as error:
        sys.stderr.write(f"mailstack-admin: {error}\n")
        return 2
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
