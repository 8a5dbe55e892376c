"""Requests refused before they reach the pipeline: 401 for a missing or invalid token.

The FHIR routes authenticate before they build the interaction, so the pipeline's `failed()` never
sees these; this ASGI middleware records every 401 on /fhir before the response goes out, unless
the pipeline recorded it already (a revoked token is refused inside it).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.audit.chain import AuditTrail
from hub.audit.record import Touched, rest_events
from hub.formats.outcome import FhirError
from hub.pipeline import OPERATION, Interaction

# Per request: whether the pipeline has recorded the refusal. A mutable holder, because the pipeline
# runs in a worker thread on a copy of this context.
_REQUEST: ContextVar[dict[str, bool] | None] = ContextVar("hub_audit_request", default=None)


def pipeline_recorded_refusal() -> None:
    holder = _REQUEST.get()
    if holder is not None:
        holder["recorded"] = True


def _interaction(scope: Scope) -> Interaction:
    from hub.api.routes import classify

    method = scope.get("method", "GET")
    segments = [s for s in scope.get("path", "").split("/")[2:] if s]
    try:
        i = classify(method, segments)
    except FhirError:
        i = Interaction(OPERATION, operation=scope.get("path"))
    i.request_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
    client = scope.get("client")
    i.client_address = client[0] if client else None
    return i


def _reason(headers: list[tuple[bytes, bytes]]) -> str:
    for k, v in headers:
        if k.lower() == b"www-authenticate":
            text = v.decode("latin-1")
            if 'error_description="' in text:
                return text.split('error_description="', 1)[1].rstrip('"')
    return "no valid access token"


class RefusalAudit:
    def __init__(self, app: ASGIApp, trail: AuditTrail) -> None:
        self.app = app
        self.trail = trail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/fhir"):
            await self.app(scope, receive, send)
            return

        holder = {"recorded": False}
        _REQUEST.set(holder)

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401 and not holder["recorded"]:
                await run_in_threadpool(self._record, scope, list(message.get("headers", [])))
            await send(message)

        await self.app(scope, receive, watch)

    def _record(self, scope: Scope, headers: Any) -> None:
        i = _interaction(scope)
        self.trail.write(rest_events(i, 401, Touched(), {}, f"401 {_reason(headers)}"))
