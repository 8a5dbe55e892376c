"""The one policy decision point: may this principal see this patient's data?

    decide(subject, patient, category, authors, rules, implied) -> Decision   (one resource)
    visibility(subject)(types, row) -> SQL condition                          (searches)

Both state the same rules (tests compare them on generated cases):
1. the operator (local commands) and data outside the patient compartment or identification data
   (the Patient resource itself, see categories.py): permit;
2. a patient sees their own data (a PGO token; hub/auth confines it to its own compartment);
3. an organisation that wrote the data (any version) sees it;
4. organisations that are not care providers (auditor, PGO, consent registry) see nothing else,
   and no care provider sees the patient's privacy choices (patient-privacy Consents);
5. the patient's consent rules that match (data category, custodian, consulting organisation or
   category, purpose, period): the most specific wins, deny wins a tie;
6. implied consent in a care process: the organisation named as owner of the patient's Task
   (eOverdracht, referral) or performer of a ServiceRequest counts as a permit of specificity 19,
   so only a deny naming that organisation itself overrides it;
7. break-the-glass (a token with purpose of use ETREAT/BTG and a stated reason): permit, flagged;
8. otherwise deny (Wabvpz: no exchange without consent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import (
    Boolean,
    Integer,
    Text,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

from consent.categories import (
    BEHANDEL,
    ORGANISATION_CATEGORY,
    PARENT,
    PRIVACY,
    category_branches,
    category_of,
    covering,
)
from consent.model import ORG_KEY_SYSTEMS, Rule
from hub.store.keys import pairs_in
from hub.store.repository import READ_COLUMNS, Stored, stored_from_row, utcnow
from hub.store.tables import care_relation, consent_rule, resource, resource_author

IMPLIED_SPECIFICITY = 19
BREAK_THE_GLASS_PURPOSES = frozenset({"ETREAT", "BTG"})


@dataclass(frozen=True, slots=True)
class Subject:
    """Who asks, as the decision point sees it."""

    local: bool = False
    patient_id: str | None = None  # a patient's own token
    org: str | None = None  # "ura:..." / "agb:..." / "client:..."
    org_category: str | None = None  # RPZAC code; None: not a care provider
    purpose: str = "TREAT"
    break_the_glass: str | None = None  # the stated reason


@dataclass(frozen=True, slots=True)
class Decision:
    permit: bool
    reason: str
    rule: str  # own-data | author | consent | care-process | break-the-glass | no-consent | ...
    consent: str | None = None  # Consent/[id] that decided
    break_the_glass: str | None = None

    def fact(self) -> dict[str, Any]:
        return {
            "decision": "permit" if self.permit else "deny",
            "reason": self.reason,
            "rule": self.rule,
            "consent": self.consent,
            "break_the_glass": self.break_the_glass,
        }


def org_key(ura: str | None, agb: str | None, client_id: str | None) -> str | None:
    if ura:
        return f"ura:{ura}"
    if agb:
        return f"agb:{agb}"
    return f"client:{client_id}" if client_id else None


def subject_of(principal: Any, break_the_glass_reason: str | None = None) -> Subject:
    if principal.kind == "local":  # an operator command; may load data on behalf of a data holder
        return Subject(local=True, org=org_key(principal.organisation_ura, principal.organisation_agb, None))
    purpose = principal.purpose_of_use or "TREAT"
    care_provider = ORGANISATION_CATEGORY.get(principal.organisation_type or "")
    emergency = purpose in BREAK_THE_GLASS_PURPOSES and care_provider is not None and principal.patient_id is None
    return Subject(
        patient_id=principal.patient_id,
        org=org_key(principal.organisation_ura, principal.organisation_agb, principal.client_id),
        org_category=care_provider,
        purpose=purpose,
        break_the_glass=break_the_glass_reason if emergency else None,
    )


def matches(rule: Rule, subject: Subject, category: str, authors: set[str], now: datetime) -> bool:
    return (
        (rule.category is None or rule.category in covering(category))
        and (rule.custodian is None or rule.custodian in authors)
        and (rule.actor_org is None or rule.actor_org == subject.org)
        and (rule.actor_category is None or rule.actor_category == subject.org_category)
        and (rule.purpose is None or rule.purpose == subject.purpose)
        and (rule.period_start is None or rule.period_start <= now)
        and (rule.period_end is None or rule.period_end >= now)
    )


def decide(
    subject: Subject,
    patient: str | None,
    category: str | None,
    authors: set[str],
    rules: list[Rule],
    implied: bool,
    now: datetime | None = None,
) -> Decision:
    if subject.local:
        return Decision(True, "operator access on the hub itself", "operator")
    if patient is None or category is None:
        return Decision(True, "not consent-bound (identification or no patient data)", "not-patient-data")
    if subject.patient_id is not None:
        if subject.patient_id == patient:
            return Decision(True, "the patient's own data", "own-data")
        return Decision(False, "another patient's data", "other-patient")
    if subject.org is not None and subject.org in authors:
        return Decision(True, "the organisation holds this data (it wrote it)", "author")
    if subject.org_category is None:
        return Decision(False, "this kind of organisation does not receive patient data", "not-a-care-provider")
    if category == PRIVACY:
        return Decision(False, "a patient's privacy choices are not shared with care providers", "privacy")
    at = now or utcnow()
    best_permit = best_deny = -1
    permit_rule = deny_rule = None
    for r in rules:
        if r.patient_id != patient or not matches(r, subject, category, authors, at):
            continue
        if r.decision == "permit" and r.specificity > best_permit:
            best_permit, permit_rule = r.specificity, r
        elif r.decision == "deny" and r.specificity > best_deny:
            best_deny, deny_rule = r.specificity, r
    if implied and best_permit < IMPLIED_SPECIFICITY:
        best_permit, permit_rule = IMPLIED_SPECIFICITY, None
    if best_permit > best_deny:
        if permit_rule is None:
            return Decision(True, "implied consent: the organisation takes part in the patient's care", "care-process")
        return Decision(True, "the patient consented", "consent", f"Consent/{permit_rule.consent_id}")
    if subject.break_the_glass:
        return Decision(True, "break-the-glass", "break-the-glass", None, subject.break_the_glass)
    if deny_rule is not None:
        return Decision(False, "the patient refused consent", "consent-deny", f"Consent/{deny_rule.consent_id}")
    return Decision(False, "the patient has not consented to sharing with this organisation", "no-consent")


# -- SQL -------------------------------------------------------------------------------------------


def implied_patients(key: str) -> Any:
    """Patients whose live Task names the organisation as owner, or ServiceRequest as performer
    (consent/care.py keeps them); None for an organisation without a URA / AGB key."""
    if key.partition(":")[0] not in ORG_KEY_SYSTEMS.values():
        return None
    return select(care_relation.c.patient_id).where(care_relation.c.org_key == key)


def visibility(subject: Subject, registry: Any, implied: Callable[[], list[str]]) -> Any:
    """A search constraint (types, row) -> SQL condition equal to `decide` for every row.
    `implied()`: the patients whose care process names the subject's organisation, as a list for the
    aliases of chains and _has (computed once per request rather than nested there: they nest this,
    and SQLite's parser depth is limited). The statement's own rows test it as a subquery, which the
    database runs once and only when a row gets that far: mostly never, so most searches skip it."""

    scope: _Scope | None = None  # taken at the first constraint: one `now` for the whole request

    def constraint(types: list[str], r: Any = resource) -> Any:
        nonlocal scope
        if subject.local or subject.patient_id is not None or subject.break_the_glass:
            return true()  # the operator; a patient (hub/auth confines the token); break-the-glass
        if all(t == "Patient" or not registry.compartment_params("Patient", t) for t in types):
            return true()  # identification or no patient data (e.g. the Practitioner of a chain)
        if scope is None:
            scope = _scope(subject, _minute())
        if r is resource:
            return scope.constraint(tuple(types), r, None)
        return scope.constraint(tuple(types), r, tuple(implied()) if subject.org_category else ())

    return constraint


def _minute() -> datetime:
    """Consent periods are compared to the minute, so a built constraint can be reused meanwhile."""
    return utcnow().replace(second=0, microsecond=0)


class _Scope:
    """The row constraints of one subject at one minute, built once and reused; a request keeps its
    scope (one `now`) even when the minute turns while it builds its statement."""

    def __init__(self, subject: Subject, now: datetime) -> None:
        self.subject, self.now = subject, now
        self._rows: dict[tuple[str, ...], Any] = {}

    def constraint(self, types: tuple[str, ...], r: Any, implied: tuple[str, ...] | None) -> Any:
        if r is not resource:  # a chain's or _has's alias: built for this statement
            return _build(self.subject, list(types), r, implied, self.now)
        built = self._rows.get(types)
        if built is None:  # the usual case: built once per subject, types and minute, then reused
            if len(self._rows) >= 256:
                self._rows.clear()
            built = Prekeyed(_build(self.subject, list(types), resource, implied, self.now))
            self._rows[types] = built
        return built


@lru_cache(maxsize=1024)
def _scope(subject: Subject, now: datetime) -> _Scope:
    return _Scope(subject, now)


class Prekeyed(ColumnElement[bool]):
    """A fixed expression whose SQLAlchemy cache key is computed once. SQLAlchemy recomputes a
    statement's cache key on every execution by walking the whole expression; for the consent
    constraint (hundreds of nodes) that walk cost more than running the query. The key and the bound
    parameters are those of the wrapped expression, so a compiled statement is reused exactly when
    it would have been, with this expression's values."""

    __visit_name__ = "prekeyed"
    inherit_cache = False  # _gen_cache_key below is the whole story
    _traverse_internals = [("inner", InternalTraversal.dp_clauseelement)]
    type = Boolean()
    _is_implicitly_boolean = True  # a condition as it is, not `expr = 1`

    def __init__(self, inner: ColumnElement[bool]) -> None:
        self.inner = inner
        key = inner._generate_cache_key()
        assert key is not None
        self._key, self._binds = key.key, list(key.bindparams)

    def _gen_cache_key(self, anon_map: Any, bindparams: list[Any]) -> tuple[Any, ...]:
        bindparams.extend(self._binds)
        return (Prekeyed, self._key)

    @property
    def _from_objects(self) -> list[Any]:
        return list(self.inner._from_objects)


@compiles(Prekeyed)
def _compile_prekeyed(element: Prekeyed, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.inner, **kw)})"  # one term, whatever surrounds it


def _build(subject: Subject, types: list[str], r: Any, implied: tuple[str, ...] | None, now: datetime) -> Any:
    """`implied`: the care-process patients as a list, or None to test them with a subquery."""
    free = (
        r.c.patient_id.is_(None) if "Patient" not in types else or_(r.c.patient_id.is_(None), r.c.res_type == "Patient")
    )
    if subject.org is None:
        return free
    # The organisation wrote it: the row's holder (no look-up), else any of its recorded authors.
    held = r.c.holder == subject.org
    author = exists().where(
        resource_author.c.res_type == r.c.res_type,
        resource_author.c.res_id == r.c.res_id,
        resource_author.c.org == subject.org,
    )
    if subject.org_category is None:
        return or_(free, held, author)
    guard, _ = _category_test(r, types)
    # Cheap tests first (OR short-circuits per row): a patient who permits this subject all their
    # data (two probes of the patient's rules), before the per-row scoring subquery.
    blanket = and_(_blanket_permit(r, subject, now), guard)  # the probes first: guard may be a CASE
    if implied is None:
        implied_test = implied_patients(subject.org)  # None: the organisation has no URA/AGB key
        implied_in = None if implied_test is None else r.c.patient_id.in_(implied_test)
    else:
        implied_in = r.c.patient_id.in_(implied) if implied else None
    return or_(free, held, blanket, author, _consented(r, subject, now, types, implied_in))


def _rules_for(r: Any, subject: Subject, now: datetime) -> tuple[Any, list[Any]]:
    """A fresh alias of consent_rule and the conditions for the row's patient's rules that can apply
    to this subject at all. Looked up per row through the patient index: the work grows with the
    rows a search tests, not with the region's consents (a set of every applicable rule, built per
    statement, would scan all of them at ~1M patients)."""
    x = consent_rule.alias()
    return x, [
        x.c.patient_id == r.c.patient_id,
        or_(x.c.actor_org.is_(None), x.c.actor_org == subject.org),
        or_(x.c.actor_category.is_(None), x.c.actor_category == subject.org_category),
        or_(x.c.purpose.is_(None), x.c.purpose == subject.purpose),
        or_(x.c.period_start.is_(None), x.c.period_start <= now),
        or_(x.c.period_end.is_(None), x.c.period_end >= now),
    ]


def _blanket_permit(r: Any, subject: Subject, now: datetime) -> Any:
    """The row's patient has no applicable deny and a permit covering every category from every
    custodian: `decide` permits each of their rows that is not a privacy choice, whatever its
    category and author. The common case of a Mitz 'yes' (GGC002 for a kind of provider)."""
    p, permit_applies = _rules_for(r, subject, now)
    d, deny_applies = _rules_for(r, subject, now)
    covers_all = and_(
        p.c.decision == "permit", or_(p.c.category.is_(None), p.c.category == BEHANDEL), p.c.custodian.is_(None)
    )
    return and_(
        exists().where(*permit_applies, covers_all),
        not_(exists().where(*deny_applies, d.c.decision == "deny")),
    )


class _DialectFunction(FunctionElement[Any]):
    """An SQL function spelt differently per dialect: `postgresql` and `sqlite` are templates of
    the compiled arguments ({args})."""

    inherit_cache = True
    postgresql = sqlite = "{args}"


@compiles(_DialectFunction)
def _dialect_function(element: _DialectFunction, compiler: Any, **kw: Any) -> str:
    template = element.sqlite if compiler.dialect.name == "sqlite" else element.postgresql
    return template.format(args=compiler.process(element.clauses, **kw))


class greatest(_DialectFunction):
    """GREATEST(a, b) on PostgreSQL; SQLite's two-argument max(a, b) is the same function."""

    type = Integer()
    inherit_cache = True
    postgresql, sqlite = "GREATEST({args})", "max({args})"


def _category_test(r: Any, types: list[str]) -> tuple[Any, Callable[[Any], Any]]:
    """(a guard on the row, the rule's category test) for category_of(row): rows of the privacy
    category never pass; a rule naming a category passes where the row's category is one it covers."""
    branches = category_branches(r, types)
    if len(branches) == 1 and not isinstance(branches[0][1], str):  # several types: a CASE expression
        cat = branches[0][1]
        return and_(cat.is_not(None), cat != PRIVACY), lambda a: or_(
            a.c.category.is_(None),
            a.c.category == cat,
            and_(a.c.category == BEHANDEL, cat.in_(sorted(PARENT))),  # a high category covers the low
        )
    shown = [(when, c) for when, c in branches if c not in (None, PRIVACY)]
    hidden = [when for when, c in branches if c in (None, PRIVACY)]
    if not shown or any(w is None for w in hidden):
        return false(), lambda a: false()
    guard = and_(*(not_(w) for w in hidden)) if hidden else true()
    covered: dict[str, list[Any]] = {}  # category a rule may name -> the branches it covers
    for when, c in shown:
        for code in covering(c):
            covered.setdefault(code, []).append(when)

    def test(a: Any) -> Any:
        parts = [a.c.category.is_(None)]
        for code, whens in covered.items():
            every = len(whens) == len(shown)  # branches are exclusive: all of them is no condition
            parts.append(a.c.category == code if every else and_(a.c.category == code, or_(*whens)))
        return or_(*parts)

    return guard, test


def _consented(r: Any, subject: Subject, now: datetime, types: list[str], implied: Any) -> Any:
    """One scalar subquery per row: the strongest matching rule, scored 2 x specificity + 1 for a
    deny, so deny wins a tie and an even top score is a permit (no rule: -1, odd: deny). A
    care-process relation is a permit of specificity 19 (score 38) for the implied patients."""
    a, applies = _rules_for(r, subject, now)
    authors = (  # correlated two levels down: say so, or SQLAlchemy joins a fresh `resource`
        select(resource_author.c.org)
        .where(resource_author.c.res_type == r.c.res_type, resource_author.c.res_id == r.c.res_id)
        .correlate(r)
    )
    guard, category_test = _category_test(r, types)
    score = a.c.specificity * 2 + case((a.c.decision == "deny", 1), else_=0)
    top: Any = (
        select(func.coalesce(func.max(score), -1))
        .where(
            *applies,
            category_test(a),
            or_(a.c.custodian.is_(None), a.c.custodian.in_(authors)),
        )
        .scalar_subquery()
    )
    if implied is not None:  # the row's patient is in a care process with the organisation
        top = greatest(top, case((implied, 2 * IMPLIED_SPECIFICITY), else_=-1))
    return and_(guard, top % 2 == 0)


# -- lookups for single resources ------------------------------------------------------------------


_RULE_COLUMNS = [
    consent_rule.c[name]
    for name in (
        "consent_id",
        "patient_id",
        "decision",
        "custodian",
        "category",
        "actor_org",
        "actor_category",
        "purpose",
        "period_start",
        "period_end",
    )
]
_AUTHORS_AND_RULES = union_all(  # the typed select first: it gives the result its column types
    select(literal("r"), *_RULE_COLUMNS).where(consent_rule.c.patient_id == bindparam("patient")),
    select(
        literal("a"),
        resource_author.c.org,
        *(null().label(f"c{n}") for n in range(len(_RULE_COLUMNS) - 1)),
    ).where(resource_author.c.res_type == bindparam("res_type"), resource_author.c.res_id == bindparam("res_id")),
)


class _authors_agg(_DialectFunction):
    """The organisations of resource_author rows, joined by a unit separator (none contain it)."""

    type = Text()
    inherit_cache = True
    postgresql, sqlite = "string_agg({args}, chr(31))", "group_concat({args}, char(31))"


class _rows_json(_DialectFunction):
    """Rows of the given columns as one JSON array of arrays (NULL for none)."""

    type = Text()
    inherit_cache = True
    postgresql = "json_agg(json_build_array({args}))::text"
    sqlite = "json_group_array(json_array({args}))"


# A read with what deciding on it takes, in one round trip: the current version, its authors and
# its patient's consent rules (correlated on the row's own patient).
_READ_FOR_DECISION = select(
    *READ_COLUMNS,
    select(_authors_agg(resource_author.c.org))
    .where(resource_author.c.res_type == resource.c.res_type, resource_author.c.res_id == resource.c.res_id)
    .scalar_subquery(),
    select(_rows_json(*_RULE_COLUMNS)).where(consent_rule.c.patient_id == resource.c.patient_id).scalar_subquery(),
).where(resource.c.res_type == bindparam("t"), resource.c.res_id == bindparam("i"), resource.c.is_current)


def _rule_from_json(values: list[Any]) -> Rule:
    consent_id, patient_id, decision, custodian, category, actor_org, actor_category, purpose, start, end = values
    return Rule(
        consent_id, patient_id, decision, custodian, category, actor_org, actor_category, purpose,
        _instant(start), _instant(end),
    )  # fmt: skip


def _instant(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass
class Lookups:
    """Per-interaction memo of what `decide` needs from the database."""

    conn: Any
    subject: Subject
    rules: dict[str, list[Rule]] = field(default_factory=dict)

    known_authors: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # filled by prefetch

    def rules_for(self, patient: str) -> list[Rule]:
        if patient not in self.rules:
            rows = self.conn.execute(select(consent_rule).where(consent_rule.c.patient_id == patient)).mappings()
            self.rules[patient] = [
                Rule(**{k: v for k, v in row.items() if k not in ("pk", "specificity")}) for row in rows
            ]
        return self.rules[patient]

    def prefetch(self, keys: list[tuple[str, str, str | None]]) -> None:
        """The authors of these resources ((type, id, patient)) and their patients' rules, in two
        queries, so deciding on a batch (a page's includes, a history page) is no query per resource."""
        wanted = sorted({(t, i) for t, i, p in keys if p is not None} - self.known_authors.keys())
        if len(wanted) < 2:
            return  # one resource: authors_and_rules fetches both in one round trip
        patients = sorted({p for _, _, p in keys if p is not None} - self.rules.keys())
        for n in range(0, len(wanted), 500):
            chunk = wanted[n : n + 500]
            found: dict[tuple[str, str], set[str]] = {k: set() for k in chunk}
            a = resource_author.c
            for t, i, org in self.conn.execute(
                select(a.res_type, a.res_id, a.org).where(pairs_in(a.res_type, a.res_id, chunk))
            ):
                found[(t, i)].add(org)
            self.known_authors.update(found)
        for n in range(0, len(patients), 500):
            group = patients[n : n + 500]
            rules: dict[str, list[Rule]] = {p: [] for p in group}
            for row in self.conn.execute(select(*_RULE_COLUMNS).where(consent_rule.c.patient_id.in_(group))):
                rules[row.patient_id].append(Rule(*row))
            self.rules.update(rules)

    def read(self, res_type: str, res_id: str) -> Stored | None:
        """The current version of a resource, its authors and its patient's rules in one statement
        (the read interaction's: the consent step primes the repository with it)."""
        row = self.conn.execute(_READ_FOR_DECISION, {"t": res_type, "i": res_id}).first()
        if row is None:
            return None
        *columns, authors, rules = row
        stored = stored_from_row(columns)
        self.known_authors[(res_type, res_id)] = set(authors.split("\x1f")) if authors else set()
        if stored.patient_id is not None:
            self.rules[stored.patient_id] = [_rule_from_json(v) for v in orjson.loads(rules)] if rules else []
        return stored

    def authors(self, res_type: str, res_id: str) -> set[str]:
        known = self.known_authors.get((res_type, res_id))
        if known is not None:
            return known
        rows = self.conn.execute(
            select(resource_author.c.org).where(
                resource_author.c.res_type == res_type, resource_author.c.res_id == res_id
            )
        )
        return {row[0] for row in rows}

    def authors_and_rules(self, res_type: str, res_id: str, patient: str) -> tuple[set[str], list[Rule]]:
        """A resource's authors and its patient's rules in one round trip (the common read path)."""
        if patient in self.rules:
            return self.authors(res_type, res_id), self.rules[patient]
        rows = self.conn.execute(_AUTHORS_AND_RULES, {"res_type": res_type, "res_id": res_id, "patient": patient})
        authors: set[str] = set()
        rules: list[Rule] = []
        for kind, *values in rows:
            if kind == "a":
                authors.add(values[0])
            else:
                rules.append(Rule(*values))
        self.rules[patient] = rules
        return authors, rules

    _implied_all: list[str] | None = None
    _implied_one: dict[str, bool] = field(default_factory=dict)

    def implied_patients(self) -> list[str]:
        """All patients whose care process names the subject's organisation (one query per request)."""
        if self._implied_all is None:
            sub = implied_patients(self.subject.org or "") if self.subject.org_category else None
            self._implied_all = [] if sub is None else sorted({row[0] for row in self.conn.execute(sub)})
        return self._implied_all

    def implied_for(self, patient: str) -> bool:
        if self._implied_all is not None:
            return patient in self._implied_all
        if patient not in self._implied_one:
            sub = implied_patients(self.subject.org or "") if self.subject.org_category else None
            self._implied_one[patient] = sub is not None and (
                self.conn.execute(sub.where(care_relation.c.patient_id == patient).limit(1)).first() is not None
            )
        return self._implied_one[patient]

    def decide(self, res: dict[str, Any], patient: str | None) -> Decision:
        s = self.subject
        category = category_of(res) if patient is not None else None
        if s.local or s.patient_id is not None or patient is None or category is None:
            return decide(s, patient, category, set(), [], False)
        authors, rules = self.authors_and_rules(str(res.get("resourceType")), str(res.get("id")), patient)
        if s.org in authors:
            return decide(s, patient, category, authors, [], False)
        decision = decide(s, patient, category, authors, rules, False)
        if decision.permit or s.org_category is None:
            return decision  # a care-process relation could only turn a denial into a permit
        return decide(s, patient, category, authors, rules, self.implied_for(patient))
