"""What a patient's login leaves behind: authorisation codes, refresh tokens and patient-bound access
tokens, grouped in a `family` (one login). Only hashes of codes and refresh tokens are stored.

A family is named after the hash of its authorisation code. When a code or a rotated refresh token
is presented again, somebody holds a copy: the whole family is revoked (refresh tokens, and access
tokens through `auth_access_token`, which the `RevokedTokens` pipeline step checks).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select, update

from hub.auth.tokens import unauthorised
from hub.formats.outcome import FhirError
from hub.pipeline import Context, Result
from hub.store.tables import auth_access_token, auth_code, auth_refresh

CODE_LIFETIME = 60  # seconds: the app exchanges the code at once
_KEEP_USED_CODES = timedelta(days=1)  # a code presented again within a day still revokes its family


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Grant:
    """What the patient granted one app: the content of a code or a refresh token."""

    family: str
    client_id: str
    patient_id: str
    subject: str  # the BSN that logged in (kept here, never put in a token)
    scopes: str
    redirect_uri: str = ""
    code_challenge: str = ""
    expires: datetime | None = None


# -- authorisation codes ---------------------------------------------------------------------------


def new_code(conn: Connection, grant: Grant, now: datetime) -> str:
    code = secrets.token_urlsafe(32)
    conn.execute(delete(auth_code).where(auth_code.c.expires < now - _KEEP_USED_CODES))
    conn.execute(
        insert(auth_code).values(
            code_hash=digest(code),
            client_id=grant.client_id,
            patient_id=grant.patient_id,
            subject=grant.subject,
            scopes=grant.scopes,
            redirect_uri=grant.redirect_uri,
            code_challenge=grant.code_challenge,
            expires=now + timedelta(seconds=CODE_LIFETIME),
            used=False,
        )
    )
    return code


def redeem_code(conn: Connection, code: str) -> tuple[str, Grant | None]:
    """('ok', grant) the first time a code is presented; ('unknown', None); ('reused', grant) after
    that, having revoked everything issued from it. Expiry is the caller's check."""
    code_hash = digest(code)
    row = conn.execute(select(auth_code).where(auth_code.c.code_hash == code_hash)).first()
    if row is None:
        return "unknown", None
    grant = Grant(
        family=code_hash,
        client_id=row.client_id,
        patient_id=row.patient_id,
        subject=row.subject,
        scopes=row.scopes,
        redirect_uri=row.redirect_uri,
        code_challenge=row.code_challenge,
        expires=row.expires,
    )
    # The conditional update is the single-use guarantee, also against two requests at once.
    claimed = conn.execute(
        update(auth_code).where(auth_code.c.code_hash == code_hash, auth_code.c.used.is_(False)).values(used=True)
    ).rowcount
    if claimed != 1:
        revoke_family(conn, code_hash)
        return "reused", grant
    return "ok", grant


# -- refresh tokens --------------------------------------------------------------------------------


def new_refresh_token(conn: Connection, grant: Grant, expires: datetime, now: datetime) -> str:
    token = secrets.token_urlsafe(32)
    conn.execute(delete(auth_refresh).where(auth_refresh.c.expires < now - timedelta(days=1)))
    conn.execute(
        insert(auth_refresh).values(
            token_hash=digest(token),
            family=grant.family,
            client_id=grant.client_id,
            patient_id=grant.patient_id,
            subject=grant.subject,
            scopes=grant.scopes,
            expires=expires,
            status="active",
        )
    )
    return token


def refresh_grant(conn: Connection, token: str) -> tuple[str, Grant | None]:
    """(status, grant) of a refresh token: active | rotated | revoked, or ('unknown', None)."""
    row = conn.execute(select(auth_refresh).where(auth_refresh.c.token_hash == digest(token))).first()
    if row is None:
        return "unknown", None
    return row.status, Grant(row.family, row.client_id, row.patient_id, row.subject, row.scopes, expires=row.expires)


def claim_refresh_token(conn: Connection, token: str) -> bool:
    """Active -> rotated, atomically: False if another request rotated it first."""
    claimed = conn.execute(
        update(auth_refresh)
        .where(auth_refresh.c.token_hash == digest(token), auth_refresh.c.status == "active")
        .values(status="rotated")
    ).rowcount
    return bool(claimed == 1)


# -- access tokens ---------------------------------------------------------------------------------


def record_access_token(conn: Connection, jti: str, grant: Grant, expires: datetime, now: datetime) -> None:
    conn.execute(delete(auth_access_token).where(auth_access_token.c.expires < now - timedelta(hours=1)))
    conn.execute(
        insert(auth_access_token).values(
            jti=jti,
            family=grant.family,
            client_id=grant.client_id,
            patient_id=grant.patient_id,
            expires=expires,
            revoked=False,
        )
    )


def revoke_access_token(conn: Connection, jti: str, client_id: str, patient_id: str, expires: datetime) -> None:
    done = conn.execute(update(auth_access_token).where(auth_access_token.c.jti == jti).values(revoked=True))
    if done.rowcount == 0:  # a token the hub did not record (issued by the operator): deny it anyway
        conn.execute(
            insert(auth_access_token).values(
                jti=jti, family=jti, client_id=client_id, patient_id=patient_id, expires=expires, revoked=True
            )
        )


def is_revoked(conn: Connection, jti: str) -> bool:
    return bool(conn.execute(select(auth_access_token.c.revoked).where(auth_access_token.c.jti == jti)).scalar())


def revoke_family(conn: Connection, family: str) -> None:
    conn.execute(update(auth_refresh).where(auth_refresh.c.family == family).values(status="revoked"))
    conn.execute(update(auth_access_token).where(auth_access_token.c.family == family).values(revoked=True))


class RevokedTokens:
    """Pipeline step: a revoked patient-bound access token is refused (401) although its signature
    and expiry are fine. One primary-key look-up, for patient tokens only, in the interaction's
    own transaction."""

    def before(self, ctx: Context) -> None:
        p = ctx.interaction.principal
        if ctx.parent is not None or p.patient_id is None or not p.token_id:
            return
        if is_revoked(ctx.conn, p.token_id):
            raise unauthorised("the access token has been revoked")

    def after(self, ctx: Context, result: Result) -> None:
        return None

    def failed(self, ctx: Context, error: FhirError) -> None:
        return None
