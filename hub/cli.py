"""The `hub` command: serve, load, migrate.

Every command takes --database URL (or HUB_DATABASE_URL) and --data-dir (or HUB_DATA_DIR); the
default is SQLite in ./hub-data, so a new user needs no database server.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.auth.clients import ORGANISATION_TYPES
from hub.config import Settings

if TYPE_CHECKING:
    from hub.app import Services


def _settings(args: argparse.Namespace) -> Settings:
    kwargs: dict[str, object] = {}
    if args.data_dir:
        kwargs["data_dir"] = Path(args.data_dir)
    if args.database:
        kwargs["database_url"] = args.database
    return Settings(**kwargs)  # type: ignore[arg-type]


def _services(settings: Settings) -> Services:
    from hub.app import Services
    from hub.store.database import Database

    return Services(settings, Database.connect(settings.database_url))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings(args)
    # Worker processes build their own app from the environment; hand the settings over that way.
    os.environ["HUB_DATABASE_URL"] = settings.database_url
    os.environ["HUB_DATA_DIR"] = str(settings.data_dir)
    services = _services(settings)  # migrates the schema once, before the workers start
    if args.demo:
        from hub.demo.seed import load_demo

        print(load_demo(services), flush=True)
    services.db.dispose()
    print(f"FHIR base: http://{args.host}:{args.port}/fhir  (database: {_safe(settings.database_url)})", flush=True)
    uvicorn.run(
        "hub.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=True,
        log_level=args.log_level,
        access_log=args.access_log,
    )
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from hub.load import load_paths

    services = _services(_settings(args))
    summary = load_paths(
        services,
        [Path(p) for p in args.paths],
        base_url=args.base_url,
        progress=not args.quiet,
        holder_ura=args.holder_ura,
    )
    for where, why in summary.failures[:50]:
        print(f"FAILED {where}: {why}", file=sys.stderr)
    if len(summary.failures) > 50:
        print(f"... and {len(summary.failures) - 50} more failures", file=sys.stderr)
    print(summary.line())
    return 1 if summary.failures else 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from hub.store.database import Database

    settings = _settings(args)
    Database.connect(settings.database_url).dispose()
    print(f"schema is current on {_safe(settings.database_url)}")
    return 0


def _database(args: argparse.Namespace) -> Any:
    from hub.store.database import Database

    return Database.connect(_settings(args).database_url)


def cmd_clients_add(args: argparse.Namespace) -> int:
    from hub.auth import clients

    jwks = None
    if args.jwks:
        jwks = json.loads(Path(args.jwks).read_text())
    elif args.public_key:
        jwks = _jwks_from_pem(Path(args.public_key).read_bytes())
    secret = secrets.token_urlsafe(32) if args.development_secret else None
    db = _database(args)
    try:
        with db.transaction(write=True) as conn:
            client = clients.add(
                conn,
                name=args.name,
                organisation_type=args.organisation_type,
                scopes=args.scope,
                ura=args.ura,
                agb=args.agb,
                jwks=jwks,
                jwks_url=args.jwks_url,
                development_secret=secret,
                redirect_uris=args.redirect_uri,
            )
    except clients.ClientError as exc:
        print(f"hub clients add: {exc}", file=sys.stderr)
        return 2
    print(f"registered client {client.client_id} ({client.organisation_type}), scopes: {client.scopes}")
    if secret:
        print("development secret (shown once; accepted only when HUB_DEVELOPMENT=1):")
        print(secret)
    return 0


def _jwks_from_pem(pem: bytes) -> dict[str, Any]:
    from joserfc.jwk import ECKey, RSAKey

    key: Any
    try:
        key = RSAKey.import_key(pem)
    except Exception:
        key = ECKey.import_key(pem)
    if key.is_private:
        raise SystemExit("hub clients add: --public-key must be a PUBLIC key (PEM)")
    return {"keys": [key.as_dict(private=False)]}


def cmd_clients_list(args: argparse.Namespace) -> int:
    from hub.auth import clients

    db = _database(args)
    with db.transaction() as conn:
        found = clients.all_clients(conn)
    for c in found:
        how = "jwks" if c.jwks else "jwks-url" if c.jwks_url else "dev-secret" if c.secret_hash else "-"
        org = " ".join(x for x in (f"URA {c.ura}" if c.ura else "", f"AGB {c.agb}" if c.agb else "") if x)
        print(f"{c.client_id}\t{c.status}\t{c.organisation_type}\t{org}\t{how}\t{c.scopes}")
    return 0


def cmd_clients_revoke(args: argparse.Namespace) -> int:
    from hub.auth import clients

    db = _database(args)
    with db.transaction(write=True) as conn:
        done = clients.revoke(conn, args.name)
    print(f"revoked {args.name}" if done else f"no client named {args.name}")
    return 0 if done else 1


def cmd_token(args: argparse.Namespace) -> int:
    """An access token for a registered client, issued by the operator (no client authentication)."""
    from hub.auth import clients
    from hub.auth.keys import SigningKeys
    from hub.auth.scopes import ScopeError, narrow
    from hub.auth.tokens import TokenService

    settings = _settings(args)
    db = _database(args)
    with db.transaction() as conn:
        client = clients.get(conn, args.client)
    if client is None or not client.active:
        print(f"hub token: no active client named {args.client}", file=sys.stderr)
        return 2
    try:
        scope = narrow(args.scope, client.scopes)
    except ScopeError as exc:
        print(f"hub token: {exc}", file=sys.stderr)
        return 2
    base = (args.base_url or settings.base_url or "http://127.0.0.1:8080/fhir").rstrip("/")
    tokens = TokenService(SigningKeys.for_data_dir(settings.data_dir), settings.system_token_lifetime)
    issued = tokens.issue(client, issuer=base.removesuffix("/fhir"), audience=base, scope=scope)
    print(f"token for {client.client_id}, scope {issued.scope!r}, valid {issued.expires_in} s, for {base}")
    print(issued.token)
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from hub.auth.keys import SigningKeys

    keys = SigningKeys.for_data_dir(_settings(args).data_dir)
    print(f"new signing key {keys.rotate()}; older keys keep verifying until retired")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from hub.audit.verify import verify
    from hub.auth.keys import SigningKeys
    from hub.store.database import Database

    settings = _settings(args)
    db = Database.connect(settings.database_url)
    try:
        report = verify(db, SigningKeys.for_data_dir(settings.data_dir))
    finally:
        db.dispose()
    print(report.line())
    return 0 if report.ok else 1


def cmd_profiles_install(args: argparse.Namespace) -> int:
    from profiles.packages import install

    services = _services(_settings(args))
    summary = install(services, Path(args.path), base_url=args.base_url)
    for where, why in summary.failures[:50]:
        print(f"FAILED {where}: {why}", file=sys.stderr)
    print(summary.line())
    return 1 if summary.failures else 0


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hub", description="Regional FHIR exchange hub")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database", help="database URL (default: HUB_DATABASE_URL, else SQLite in the data dir)")
    common.add_argument("--data-dir", help="data directory (default: HUB_DATA_DIR, else ./hub-data)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", parents=[common], help="run the FHIR server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--workers", type=int, default=1, help="server processes (one per core in production)")
    s.add_argument("--demo", action="store_true", help="load the Dutch demo region before serving")
    s.add_argument("--log-level", default="info")
    s.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True)
    s.set_defaults(func=cmd_serve)

    ld = sub.add_parser("load", parents=[common], help="load FHIR files (JSON, XML, NDJSON, Bundles; .gz/.bz2)")
    ld.add_argument("paths", nargs="+")
    ld.add_argument("--base-url", default="http://localhost:8080/fhir", help="the hub's own base, for references")
    ld.add_argument("--quiet", action="store_true", help="no progress bar")
    ld.add_argument(
        "--holder-ura", help="URA of the organisation that holds the data (it always sees it; others need consent)"
    )
    ld.set_defaults(func=cmd_load)

    m = sub.add_parser("migrate", parents=[common], help="create or upgrade the database schema")
    m.set_defaults(func=cmd_migrate)

    cl = sub.add_parser("clients", help="registered clients of the authorisation server")
    cls = cl.add_subparsers(dest="clients_command", required=True)
    ca = cls.add_parser("add", parents=[common], help="register a client")
    ca.add_argument("--name", required=True)
    ca.add_argument("--organisation-type", required=True, choices=ORGANISATION_TYPES)
    ca.add_argument("--ura")
    ca.add_argument("--agb")
    ca.add_argument("--scope", required=True, help='allowed scopes, e.g. "system/*.rs system/Task.cru"')
    ca.add_argument("--redirect-uri", action="append", help="(PGO apps) allowed redirect URIs")
    keys = ca.add_mutually_exclusive_group()  # none: a public PGO app (PKCE)
    keys.add_argument("--jwks", help="file with the client's public JWKS")
    keys.add_argument("--jwks-url", help="URL where the client publishes its JWKS")
    keys.add_argument("--public-key", help="file with the client's public key (PEM)")
    keys.add_argument("--development-secret", action="store_true", help="a generated secret (development only)")
    ca.set_defaults(func=cmd_clients_add)
    cli = cls.add_parser("list", parents=[common], help="list clients")
    cli.set_defaults(func=cmd_clients_list)
    cr = cls.add_parser("revoke", parents=[common], help="revoke a client")
    cr.add_argument("name")
    cr.set_defaults(func=cmd_clients_revoke)

    t = sub.add_parser("token", parents=[common], help="print an access token for a registered client")
    t.add_argument("--client", required=True)
    t.add_argument("--scope", help="narrower scopes than the client's (default: all it may have)")
    t.add_argument("--base-url", help="the FHIR base the token is for (default HUB_BASE_URL or :8080)")
    t.set_defaults(func=cmd_token)

    k = sub.add_parser("keys", help="the hub's signing keys")
    ks = k.add_subparsers(dest="keys_command", required=True)
    kr = ks.add_parser("rotate", parents=[common], help="add a new signing key")
    kr.set_defaults(func=cmd_keys_rotate)

    pr = sub.add_parser("profiles", help="conformance resources (profiles, value sets, code systems)")
    prs = pr.add_subparsers(dest="profiles_command", required=True)
    pi = prs.add_parser("install", parents=[common], help="install a FHIR package (.tgz) or a folder of definitions")
    pi.add_argument("path")
    pi.add_argument("--base-url", default="http://localhost:8080/fhir", help="the hub's own base")
    pi.set_defaults(func=cmd_profiles_install)

    au = sub.add_parser("audit", help="the audit trail (NEN 7513)")
    aus = au.add_subparsers(dest="audit_command", required=True)
    av = aus.add_parser("verify", parents=[common], help="check the hash chain and the signed checkpoints")
    av.set_defaults(func=cmd_audit_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
