"""The HTML of the patient login (plain strings; every value from outside is escaped), and forms.

The pages are bilingual (Dutch first: the region's patients) and strict: no scripts, no framing
(clickjacking of the consent button), nothing cached, no referrer.
"""

from __future__ import annotations

from html import escape
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse

MAX_FORM = 16 * 1024

_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em;line-height:1.5}"
    ".dev{background:#b00020;color:#fff;padding:.5em 1em;font-weight:bold}"
    "ul{padding-left:1.2em}button{font-size:1em;padding:.4em 1.2em;margin-right:1em}.en{color:#555}"
)


class FormError(ValueError):
    pass


async def read_form(request: Request) -> dict[str, str]:
    """A small x-www-form-urlencoded body; a field given twice is refused (RFC 6749 3.1)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise FormError("send the form as application/x-www-form-urlencoded")
    raw = await request.body()
    if len(raw) > MAX_FORM:
        raise FormError("the form is too large")
    pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    form = dict(pairs)
    if len(form) != len(pairs):
        raise FormError("a field is given more than once")
    return form


def html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status, headers=dict(_HEADERS))


def page(title: str, content: str, development: bool = False) -> str:
    banner = (
        '<p class="dev">DEVELOPMENT LOGIN - test patients only, no real authentication. '
        "/ ONTWIKKEL-LOGIN - alleen testpatiënten, geen echte authenticatie.</p>"
        if development
        else ""
    )
    return (
        f'<!doctype html><html lang="nl"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>'
        f"<body>{banner}<h1>{escape(title)}</h1>{content}</body></html>"
    )


def error_page(status: int, title: str, message: str, back_to_app: str | None = None) -> HTMLResponse:
    link = f'<p><a href="{escape(back_to_app)}">Terug naar de app / Back to the app</a></p>' if back_to_app else ""
    return html(page(title, f"<p>{escape(message)}</p>{link}"), status)


def development_login(transaction: str, message: str | None = None) -> str:
    note = f'<p role="alert"><strong>{escape(message)}</strong></p>' if message else ""
    content = (
        f"{note}<p>Kies een test-BSN (999xxxxxx, elfproef). <span class='en'>Type a test BSN "
        "(999xxxxxx, passing the 11-proof), e.g. 999951750 from the demo region.</span></p>"
        '<form method="post" action="/auth/login">'
        f'<input type="hidden" name="transaction" value="{escape(transaction)}">'
        '<label>BSN <input name="bsn" inputmode="numeric" autocomplete="off" maxlength="11" required></label> '
        '<button type="submit">Inloggen / Log in</button></form>'
    )
    return page("Inloggen (ontwikkeling) / Log in (development)", content, development=True)


def consent(app: str, patient: str, permissions: list[tuple[str, str]], consent_token: str, development: bool) -> str:
    items = "".join(f"<li>{escape(nl)} <span class='en'>/ {escape(en)}</span></li>" for nl, en in permissions)
    content = (
        f"<p>U bent ingelogd als <strong>{escape(patient)}</strong>. "
        f"<span class='en'>You are logged in as {escape(patient)}.</span></p>"
        f"<p>De app <strong>{escape(app)}</strong> vraagt toegang tot uw gegevens bij deze zorgregio: "
        f"<span class='en'>The app {escape(app)} asks for access to your data in this care region:</span></p>"
        f"<ul>{items}</ul>"
        "<p>U kunt deze toegang later intrekken in de app. "
        "<span class='en'>You can withdraw this access later in the app.</span></p>"
        '<form method="post" action="/auth/consent">'
        f'<input type="hidden" name="consent" value="{escape(consent_token)}">'
        '<button type="submit" name="decision" value="approve">Toestaan / Allow</button>'
        '<button type="submit" name="decision" value="deny">Weigeren / Deny</button></form>'
    )
    return page("Toestemming voor een app / Allow an app", content, development)


# -- what scopes mean, in words ----------------------------------------------------------------------

_TYPES_NL = {
    "Observation": ("metingen en uitslagen", "measurements and results"),
    "Condition": ("problemen en diagnoses", "problems and diagnoses"),
    "AllergyIntolerance": ("allergieën", "allergies"),
    "MedicationStatement": ("medicijngebruik", "medication use"),
    "MedicationRequest": ("voorschriften van medicijnen", "prescriptions"),
    "Immunization": ("vaccinaties", "vaccinations"),
    "Procedure": ("behandelingen en verrichtingen", "procedures"),
    "Encounter": ("contacten met zorgverleners", "visits to care providers"),
    "Patient": ("uw persoonsgegevens", "your personal details"),
    "Consent": ("uw toestemmingen", "your consents"),
    "DocumentReference": ("documenten", "documents"),
    "AuditEvent": ("wie uw gegevens heeft ingezien", "who accessed your data"),
}
_VERBS = (  # (permission letters, Dutch verb, English verb)
    ("rs", "inzien", "read"),
    ("c", "toevoegen", "add"),
    ("u", "wijzigen", "change"),
    ("d", "verwijderen", "delete"),
)


def describe_scope(scope: str, refresh_hours: int) -> tuple[str, str] | None:
    """(Dutch, English) for one granted scope; None for ones that need no words (launch/patient)."""
    if scope == "offline_access":
        return (
            f"Toegang houden als u niet ingelogd bent (tot {refresh_hours} uur na het laatste gebruik)",
            f"Keep access while you are logged out (up to {refresh_hours} hours after its last use)",
        )
    if not scope.startswith("patient/"):
        return None
    rtype, _, letters = scope.removeprefix("patient/").partition(".")
    if rtype == "*":
        what_nl, what_en = "al uw gegevens", "all your data"
    else:
        nl, en = _TYPES_NL.get(rtype, (rtype, rtype))
        what_nl, what_en = f"{nl} ({rtype})", f"{en} ({rtype})"
    verbs = [(nl, en) for need, nl, en in _VERBS if set(need) & set(letters)]
    if not verbs:
        return None
    return (
        f"{what_nl.capitalize()} {' en '.join(v[0] for v in verbs)}",
        f"{' and '.join(v[1] for v in verbs).capitalize()} {what_en}",
    )
