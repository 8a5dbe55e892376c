"""The `_filter` search parameter (R4 search_filter.html): parsing its expression into a tree of
ordinary search clauses.

    filter    = paramExp / logExp / "not" "(" filter ")" / "(" filter ")"
    logExp    = filter ("and" / "or" filter)+        -- left to right, no precedence between them
    paramExp  = paramPath SP compareOp SP compValue
    paramPath = paramName ("." paramPath)             -- a chain, as subject.name

Each comparison becomes the `Clause` that the same test has in ordinary search (`birthdate ge
2014-10-10` is `birthdate=ge2014-10-10`, `name co "pet"` is `name:contains=pet`, `code ss x` is
`code:below=x`, `pr false` is `:missing=true`), so the planner, the index tables and the access
constraints are the ones every search uses. The few tests ordinary search has no form for (a
string equal to or ending with a value, a token or string with an unequal value, a date period
that overlaps or contains one, a number whose precision includes one) are marked on the clause
(`Clause.op`) and planned in hub.search.planner. Beyond the spec's table: `re` and `eq` both
take a reference, a uri's `sw` reads as `:below`, and `_content co "words"` as `_content=words`.

Not supported, each a 400 naming it: filters on a parameter path (`related[type eq x].target`),
string `gt`/`lt`/`ge`/`le`, and operators that do not apply to the parameter's type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from hub.formats.dates import parse_range
from hub.formats.outcome import FhirError
from hub.search.query import Clause, FilterNode

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
OPERATORS = frozenset(
    {"eq", "ne", "co", "sw", "ew", "gt", "lt", "ge", "le", "ap", "sa", "eb", "pr", "po", "ss", "sb", "in", "ni", "re"}
)
# The spec's shorthand code systems, usable in place of their URL (search_filter.html, operators).
SYSTEMS = {
    "loinc": "http://loinc.org",
    "snomed": "http://snomed.info/sct",
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "ucum": "http://unitsofmeasure.org",
}
_ORDER = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")  # search prefixes, as in ordinary search
MAX_LENGTH = 4000
MAX_DEPTH = 32


@dataclass
class Logic:
    """`and` / `or` over its parts, or `not` of its one part, as written."""

    op: str
    parts: list[Logic | Comparison] = field(default_factory=list)


@dataclass
class Comparison:
    """One `path op value` as written."""

    path: list[str]
    op: str
    value: str
    at: int  # character offset, for error messages


def _error(text: str, at: int, message: str) -> FhirError:
    snippet = text[max(0, at - 20) : at + 20]
    return FhirError(400, "invalid", f"_filter: {message} at character {at + 1} (near {snippet!r})", "_filter")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def parse(self) -> Logic | Comparison:
        node = self.filter(0)
        self.space()
        if self.i != len(self.text):
            raise _error(self.text, self.i, "unexpected text")
        return node

    def space(self) -> None:
        while self.i < len(self.text) and self.text[self.i].isspace():
            self.i += 1

    def word(self) -> str:
        """The run of characters up to whitespace or a bracket (a keyword, path or operator)."""
        start = self.i
        while self.i < len(self.text) and not self.text[self.i].isspace() and self.text[self.i] not in "()[]":
            self.i += 1
        return self.text[start : self.i]

    def filter(self, depth: int) -> Logic | Comparison:
        if depth > MAX_DEPTH:
            raise _error(self.text, self.i, f"nested more than {MAX_DEPTH} deep")
        node = self.term(depth)
        built = False  # whether `node` is this loop's own (a parenthesised group keeps its grouping)
        while True:
            self.space()
            save = self.i
            word = self.word()
            if word not in ("and", "or"):
                self.i = save
                return node
            following = self.term(depth)
            # Left to right, no precedence: `a or b and c` is `(a or b) and c`.
            if built and isinstance(node, Logic) and node.op == word:
                node.parts.append(following)
            else:
                node = Logic(word, [node, following])
                built = True

    def term(self, depth: int) -> Logic | Comparison:
        self.space()
        if self.i >= len(self.text):
            raise _error(self.text, self.i, "a comparison or '(' expected, the expression ends")
        if self.text[self.i] == "(":
            return self.group(depth)
        save = self.i
        if self.word() == "not":
            self.space()
            if self.i < len(self.text) and self.text[self.i] == "(":
                return Logic("not", [self.group(depth)])
            raise _error(self.text, self.i, "'not' must be followed by '('")
        self.i = save
        return self.comparison()

    def group(self, depth: int) -> Logic | Comparison:
        self.i += 1  # "("
        inner = self.filter(depth + 1)
        self.space()
        if self.i >= len(self.text) or self.text[self.i] != ")":
            raise _error(self.text, self.i, "')' expected")
        self.i += 1
        return inner

    def comparison(self) -> Comparison:
        at = self.i
        path = self.path()
        self.space()
        op_at = self.i
        op = self.word()
        if op not in OPERATORS:
            raise _error(self.text, op_at, f"unknown operator {op!r}" if op else "an operator expected")
        if self.i >= len(self.text) or not self.text[self.i].isspace():
            raise _error(self.text, self.i, "a space and a value expected after the operator")
        self.space()
        return Comparison(path, op, self.value(), at)

    def path(self) -> list[str]:
        names = []
        while True:
            m = NAME.match(self.text, self.i)
            if not m:
                raise _error(self.text, self.i, "a search parameter name expected")
            names.append(m.group())
            self.i = m.end()
            if self.i < len(self.text) and self.text[self.i] == "[":
                raise FhirError(
                    400,
                    "not-supported",
                    f"_filter: a filter on a parameter path ({m.group()}[...]) is not supported",
                    "_filter",
                )
            if self.i < len(self.text) and self.text[self.i] == ".":
                self.i += 1
                continue
            return names

    def value(self) -> str:
        if self.i >= len(self.text):
            raise _error(self.text, self.i, "a value expected")
        if self.text[self.i] == '"':
            decoder = json.JSONDecoder()
            try:
                value, end = decoder.raw_decode(self.text, self.i)
            except json.JSONDecodeError:
                raise _error(self.text, self.i, "an unterminated or malformed string") from None
            self.i = end
            return str(value)
        start = self.i
        while self.i < len(self.text) and not self.text[self.i].isspace() and self.text[self.i] not in ")]":
            self.i += 1
        if self.i == start:
            raise _error(self.text, self.i, "a value expected")
        return self.text[start : self.i]


def parse(text: str) -> Logic | Comparison:
    """The expression as a tree of comparisons (syntax only; `build` gives them meaning)."""
    if len(text) > MAX_LENGTH:
        raise FhirError(413, "too-costly", f"_filter: longer than {MAX_LENGTH} characters", "_filter")
    if not text.strip():
        raise FhirError(400, "invalid", "_filter: the expression is empty", "_filter")
    return _Parser(text).parse()


# -- comparisons to clauses -------------------------------------------------------------------------


def _escape(value: str) -> str:
    """A single value in ordinary search syntax: a comma there separates alternatives."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def _token_value(value: str) -> str:
    system, bar, code = value.partition("|")
    if bar and system.lower() in SYSTEMS:
        system = SYSTEMS[system.lower()]
    return _escape(system) + bar + _escape(code) if bar else _escape(value)


def _quantity_value(value: str) -> str:
    parts = value.split("|")
    if len(parts) == 3 and parts[1].lower() in SYSTEMS:
        parts[1] = SYSTEMS[parts[1].lower()]
    return "|".join(_escape(p) for p in parts)


# What each operator means for each parameter type: (modifier, Clause.op, value with a prefix?).
_PREFIXED = {op: (None, None, True) for op in _ORDER}
_MEANING: dict[str, dict[str, tuple[str | None, str | None, bool]]] = {
    "string": {"eq": (None, "eq", False), "ne": (None, "ne", False), "co": ("contains", None, False),
               "sw": (None, None, False), "ew": (None, "ew", False)},
    "token": {"eq": (None, None, False), "ne": (None, "ne", False), "ss": ("below", None, False),
              "sb": ("above", None, False), "in": ("in", None, False), "ni": ("not-in", None, False)},
    "reference": {"eq": (None, None, False), "re": (None, None, False)},
    "date": {**_PREFIXED, "po": (None, "po", False), "co": (None, "co", False)},
    "number": {**_PREFIXED, "co": (None, "co", False)},
    "quantity": dict(_PREFIXED),
    "uri": {"eq": (None, None, False), "sw": ("below", None, False)},
    "composite": {"eq": (None, None, False)},
}  # fmt: skip


def _check_value(kind: str, c: Comparison, where: str) -> None:
    """A date or number that cannot be read is an error naming the comparison, here rather than when
    the planner reads it (which would name the parameter alone, with the prefix added here)."""
    try:
        if kind == "date":
            parse_range(c.value, "_filter")
        elif kind in ("number", "quantity"):
            float(c.value.split("|")[0])
    except (FhirError, ValueError):
        raise FhirError(400, "invalid", f"_filter ({where}): {c.value!r} is not a {kind} value", "_filter") from None


def _innermost(clause: Clause) -> Clause:
    while clause.chain is not None:
        clause = clause.chain
    return clause


def build(tree: Logic | Comparison, text: str, make: Callable[[str, str], Clause | None]) -> list[Clause]:
    """The tree with each comparison made a Clause by `make(name, value)` (the query parser's clause
    in strict mode). A top-level `and` gives its parts separately, so they plan as the separate
    parameters of an ordinary search (ranked, driving, tested per row)."""
    if isinstance(tree, Logic) and tree.op == "and":
        return [p for part in tree.parts for p in build(part, text, make)]
    node = _node(tree, text, make)
    if isinstance(node, Clause):
        return [node]
    return [Clause("_filter", "_filter", "special", None, [], None, filter=node)]


def _node(tree: Logic | Comparison, text: str, make: Callable[[str, str], Clause | None]) -> Clause | FilterNode:
    if isinstance(tree, Comparison):
        return _leaf(tree, text, make)
    return FilterNode(tree.op, [_node(p, text, make) for p in tree.parts])


def _leaf(c: Comparison, text: str, make: Callable[[str, str], Clause | None]) -> Clause:
    name = ".".join(c.path)
    where = f"{name} {c.op}"

    def clause(n: str, v: str) -> Clause:
        try:
            out = make(n, v)
        except FhirError as exc:
            raise FhirError(
                exc.status, exc.issues[0].code, f"_filter ({where}): {exc.diagnostics}", "_filter"
            ) from None
        if out is None:  # make() is strict and raises rather than skip; kept for the type
            raise _error(text, c.at, f"{name} cannot be searched")
        return out

    if c.op == "pr":
        if c.value.lower() not in ("true", "false"):
            raise _error(text, c.at, f"{where} takes true or false")
        return clause(f"{name}:missing", "false" if c.value.lower() == "true" else "true")
    # The parameter's type decides what the operator means: parse once to find it (a chain's last).
    probe = _innermost(clause(name, "x"))
    kind = probe.type
    if probe.code == "_id":
        kind = "id"
    elif probe.code == "_lastUpdated":
        kind = "date"
    if probe.code == "_content":  # words, as `_content=` reads them
        if c.op not in ("co", "eq", "sw"):
            raise _error(text, c.at, f"{where}: _content takes co")
        return clause(name, _escape(c.value))
    if kind == "id":
        if c.op not in ("eq", "ne"):
            raise _error(text, c.at, f"{where}: _id takes eq or ne")
        return clause(f"{name}:not" if c.op == "ne" else name, _escape(c.value))
    meaning = _MEANING.get(kind, {}).get(c.op)
    if meaning is None:
        raise FhirError(
            400,
            "not-supported",
            f"_filter ({where}): the operator {c.op} does not apply to {kind} parameters",
            "_filter",
        )
    modifier, op, prefixed = meaning
    _check_value(kind, c, where)
    if kind == "token":
        value = _token_value(c.value)
    elif kind == "quantity":
        value = _quantity_value(c.value)
    elif kind == "composite":
        value = "$".join(_token_value(p) if "|" in p else _escape(p) for p in c.value.split("$"))
    else:
        value = _escape(c.value)
    if prefixed:
        value = c.op + value
    out = clause(f"{name}:{modifier}" if modifier else name, value)
    _innermost(out).op = op
    return out
