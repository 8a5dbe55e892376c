"""A compiler for the FHIRPath used in search-parameter expressions, into fast closures over FHIR JSON.

Search indexing evaluates ~40 expressions per resource on every write, so parsing at call time (as a
general FHIRPath engine does) is far too slow. Each expression is parsed once into a small AST and
compiled into nested Python closures. Every value they produce is a `Node`: the JSON value together
with its FHIR type name from the R4 structure (`Observation.value` on a resource with `valueQuantity`
gives `(dict, "Quantity")`), because how a value is indexed depends on its type.

Supported: paths, choice elements (`value` finds `valueQuantity`, `valueString`, ...), type filters at
the start of a path (`Observation.code`, `Resource.meta`), `ofType()` / `as()` / `is()` and the `as` /
`is` operators, `where()`, `select()`, `exists()`, `empty()`, `not()`, `first()`, `last()`, `tail()`,
`skip()`, `take()`, `single()`, `count()`, `distinct()`, `all()`, `extension(url)`, `hasValue()`,
`resolve()` (to a stub of the target's type, enough for `resolve() is Patient`), string functions
(`startsWith`, `endsWith`, `contains`, `matches`, `lower`, `upper`, `length`, `toString`), indexers,
unions, `=`, `!=`, `~`, `!~`, `and`, `or`, `xor`, `implies`, `in`, `contains`, literals, `%resource`.
Anything else falls back to fhirpathpy (compiled once, see `Evaluator.fallback`).

Deliberate deviations: `ofType(DateTime)` is read as FHIR `dateTime` (the R4 Observation-value-date
parameter spells it that way and would otherwise never match); `ofType` / `is` accept subtypes of
complex types (an Age is a Quantity) but match primitives exactly (a `code` is not `ofType(string)`),
like fhirpathpy; `Resource.x` / `DomainResource.x` apply to every resource type.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any

from hub.fhirmodel.structure import structure

Node = tuple[Any, str]  # (JSON value, FHIR type name or backbone path such as "Observation.component")
Fn = Callable[[list[Node], Node], list[Node]]  # (focus collection, root resource node) -> collection
ANY = "*"  # static type of values whose type is only known at run time

_EMPTY: list[Node] = []


class FhirPathError(ValueError):
    """The expression is not valid FHIRPath or refers to elements that do not exist."""


class Unsupported(FhirPathError):
    """Valid FHIRPath outside the compiled subset: evaluate it with fhirpathpy instead."""


# --------------------------------------------------------------------------------------------- tokens

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
    |(?P<string>'(?:[^'\\]|\\.)*')
    |(?P<datetime>@[0-9T:\-+.Z]+)
    |(?P<number>\d+(?:\.\d+)?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*|`(?:[^`\\]|\\.)*`)
    |(?P<var>%(?:[A-Za-z_][A-Za-z0-9_]*|`[^`]*`|'[^']*'))
    |(?P<special>\$(?:this|index|total))
    |(?P<op><=|>=|!=|!~|[=~<>|+\-*/&.()\[\],{}])
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(body: str) -> str:
    def repl(m: re.Match[str]) -> str:
        c = m.group(1)
        if c.startswith("u"):
            return chr(int(c[1:], 16))
        return _ESCAPES.get(c, c)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", repl, body)


def _tokenize(expr: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if not m:
            raise FhirPathError(f"unexpected character {expr[pos]!r} at {pos} in {expr!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        text = m.group()
        if kind == "ws":
            continue
        if kind == "string":
            text = _unescape(text[1:-1])
        elif kind == "ident" and text.startswith("`"):
            text = _unescape(text[1:-1])
            kind = "qident"  # delimited: never a keyword
        tokens.append((kind, text))
    tokens.append(("eof", ""))
    return tokens


# --------------------------------------------------------------------------------------------- parser
# The AST is made of tuples: ("ident", name), ("member", target, name), ("call", target|None, name, args),
# ("index", target, ast), ("binop", op, left, right), ("typeop", "is"|"as", target, type), ("lit", value, type),
# ("var", name), ("this",), ("empty",), ("neg", ast).

Ast = tuple[Any, ...]

# Binding powers, loosest first (http://hl7.org/fhirpath/N1/#operator-precedence).
_BINARY = {
    "implies": 1,
    "or": 2,
    "xor": 2,
    "and": 3,
    "in": 4,
    "contains": 4,
    "=": 5,
    "~": 5,
    "!=": 5,
    "!~": 5,
    "<": 6,
    ">": 6,
    "<=": 6,
    ">=": 6,
    "|": 7,
    "is": 8,
    "as": 8,
    "+": 9,
    "-": 9,
    "&": 9,
    "*": 10,
    "/": 10,
    "div": 10,
    "mod": 10,
}


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = _tokenize(expr)
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos]

    def next(self) -> tuple[str, str]:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def expect(self, text: str) -> None:
        kind, t = self.next()
        if t != text or kind in ("string", "qident"):
            raise FhirPathError(f"expected {text!r} but found {t!r} in {self.expr!r}")

    def parse(self) -> Ast:
        ast = self.expression(0)
        if self.peek()[0] != "eof":
            raise FhirPathError(f"unexpected {self.peek()[1]!r} in {self.expr!r}")
        return ast

    def expression(self, rbp: int) -> Ast:
        left = self.postfix(self.prefix())
        while True:
            kind, text = self.peek()
            lbp = _BINARY.get(text, 0) if kind in ("op", "ident") else 0
            if lbp <= rbp:
                return left
            self.next()
            if text in ("is", "as"):
                left = ("typeop", text, left, self.type_specifier())
            else:
                left = ("binop", text, left, self.expression(lbp))

    def type_specifier(self) -> str:
        kind, name = self.next()
        if kind not in ("ident", "qident"):
            raise FhirPathError(f"expected a type name in {self.expr!r}")
        while self.peek()[1] == ".":
            self.next()
            name += "." + self.next()[1]
        return name

    def prefix(self) -> Ast:
        kind, text = self.next()
        if kind == "string":
            return ("lit", text, "string")
        if kind == "number":
            return ("lit", Decimal(text) if "." in text else int(text), "decimal" if "." in text else "integer")
        if kind == "datetime":
            raise Unsupported(f"date/time literals are not compiled: {self.expr!r}")
        if kind == "var":
            return ("var", text[1:].strip("`'"))
        if kind == "special":
            if text != "$this":
                raise Unsupported(f"{text} is not compiled: {self.expr!r}")
            return ("this",)
        if kind == "ident" and text in ("true", "false"):
            return ("lit", text == "true", "boolean")
        if kind in ("ident", "qident"):
            if self.peek()[1] == "(" and kind == "ident":
                return ("call", None, text, self.arguments())
            return ("ident", text)
        if text == "(":
            inner = self.expression(0)
            self.expect(")")
            return inner
        if text == "{":
            self.expect("}")
            return ("empty",)
        if text in ("-", "+"):
            operand = self.postfix(self.prefix())
            return ("neg", operand) if text == "-" else operand
        raise FhirPathError(f"unexpected {text!r} in {self.expr!r}")

    def postfix(self, left: Ast) -> Ast:
        while True:
            text = self.peek()[1]
            if self.peek()[0] not in ("op",):
                return left
            if text == ".":
                self.next()
                kind, name = self.next()
                if kind not in ("ident", "qident"):
                    raise FhirPathError(f"expected a name after '.' in {self.expr!r}")
                if kind == "ident" and self.peek()[1] == "(":
                    left = ("call", left, name, self.arguments())
                else:
                    left = ("member", left, name)
            elif text == "[":
                self.next()
                index = self.expression(0)
                self.expect("]")
                left = ("index", left, index)
            else:
                return left

    def arguments(self) -> list[Ast]:
        self.expect("(")
        args: list[Ast] = []
        if self.peek()[1] == ")" and self.peek()[0] == "op":
            self.next()
            return args
        while True:
            args.append(self.expression(0))
            kind, text = self.next()
            if text == ")" and kind == "op":
                return args
            if text != "," or kind != "op":
                raise FhirPathError(f"expected ',' or ')' in {self.expr!r}")


def unparse(ast: Ast) -> str:
    """FHIRPath text for an AST (fully parenthesised), e.g. the branches of an expression for one type."""
    kind = ast[0]
    if kind == "ident":
        return ast[1] if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ast[1]) else f"`{ast[1]}`"
    if kind == "member":
        return f"{unparse(ast[1])}.{unparse(('ident', ast[2]))}"
    if kind == "call":
        call = f"{ast[2]}({', '.join(unparse(a) for a in ast[3])})"
        return call if ast[1] is None else f"{unparse(ast[1])}.{call}"
    if kind == "index":
        return f"{unparse(ast[1])}[{unparse(ast[2])}]"
    if kind in ("binop", "typeop"):
        right = unparse(ast[3]) if kind == "binop" else ast[3]
        return f"({unparse(ast[2])} {ast[1]} {right})"
    if kind == "lit":
        value = ast[1]
        if type(value) is bool:
            return "true" if value else "false"
        if isinstance(value, str):
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return str(value)
    if kind == "var":
        return f"%{ast[1]}"
    if kind == "neg":
        return f"-{unparse(ast[1])}"
    return {"this": "$this", "empty": "{}"}[kind]


@lru_cache(maxsize=4096)
def parse(expr: str) -> Ast:
    """Parse a FHIRPath expression into the tuple AST (cached: the same text parses once)."""
    return _Parser(expr).parse()


# ------------------------------------------------------------------------------------------ type system

_SYSTEM_TYPES = {
    "String": "string",
    "Boolean": "boolean",
    "Integer": "integer",
    "Decimal": "decimal",
    "Date": "date",
    "DateTime": "dateTime",
    "Time": "time",
    "Quantity": "Quantity",
}


def _type_name(spec: str) -> str:
    """FHIR type name for a type specifier: `FHIR.Quantity` -> Quantity, `System.String` -> string."""
    if spec.startswith("FHIR."):
        spec = spec[5:]
    elif spec.startswith("System."):
        spec = _SYSTEM_TYPES.get(spec[7:], spec[7:])
    if spec == "DateTime":  # R4 Observation-value-date says ofType(DateTime); FHIR has dateTime
        return "dateTime"
    if structure().get(spec) is None:
        raise FhirPathError(f"unknown type {spec!r}")
    return spec


@cache
def _ancestors(type_name: str) -> frozenset[str]:
    """The type and everything it specialises: Age -> {Age, Quantity, Element}; Observation -> ..., Resource."""
    out = {type_name}
    info = structure().get(type_name)
    if info is not None and info.kind == "backbone":
        out.update(("BackboneElement", "Element"))
    while info is not None and info.base:
        out.add(info.base)
        info = structure().get(info.base)
    return frozenset(out)


@cache
def is_type(actual: str, wanted: str) -> bool:
    """Whether a value of FHIR type `actual` is a `wanted` (subtypes count, except among primitives)."""
    if actual == wanted:
        return True
    info = structure().get(actual)
    if info is None or info.kind == "primitive":
        return False
    return wanted in _ancestors(actual)


def _is_type_name(name: str) -> bool:
    """An identifier that names a type (element names never start with a capital in FHIR)."""
    return name[:1].isupper() and structure().get(name) is not None


def _is_resource_type(name: str) -> bool:
    info = structure().get(name)
    return info is not None and info.kind == "resource"


@cache
def _props(type_name: str, name: str, only: str | None) -> tuple[tuple[str, str], ...]:
    """(JSON key, FHIR type) pairs that element `name` of `type_name` can appear as, optionally ofType(only)."""
    info = structure().get(type_name)
    if info is None or info.kind == "primitive":
        return ()
    elements = info.by_base_name.get(name)
    if elements is None:
        el = info.elements.get(name)  # lenient: `valueQuantity` written out instead of `value`
        elements = [el] if el is not None else []
    pairs = tuple((e.name, e.type) for e in elements)
    if only is not None:
        pairs = tuple(p for p in pairs if p[1] == "Resource" or is_type(p[1], only))
    return pairs


def _member_types(in_types: frozenset[str], name: str, only: str | None, strict: bool, expr: str) -> frozenset[str]:
    """Static result types of `.name` on values of `in_types` (for validation and typing)."""
    out: set[str] = set()
    for t in in_types:
        if t == ANY:
            return frozenset({ANY})
        pairs = _props(t, name, only)
        out.update(ANY if typ == "Resource" else typ for _, typ in pairs)
    if strict and not out and in_types:
        raise FhirPathError(f"{sorted(in_types)} has no element {name!r} in {expr!r}")
    return frozenset(out)


# ------------------------------------------------------------------------------------------ references

_REF_RE = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?$",
)


@lru_cache(maxsize=65536)
def parse_reference(ref: str) -> tuple[str, str, str | None] | None:
    """(type, id, version) of a literal reference ending in `Type/id[/_history/v]`, else None.

    Works for relative (`Patient/1`) and absolute (`https://x/fhir/Patient/1`) references; contained
    (`#x`), `urn:uuid:` and conditional references give None. The type must be an R4 resource type.
    """
    m = _REF_RE.search(ref)
    if m is None or not _is_resource_type(m.group(1)) or ref.startswith("#"):
        return None
    return m.group(1), m.group(2), m.group(3)


def reference_type(value: Any, type_name: str) -> str | None:
    """The resource type a Reference (or canonical / uri string) points at, if the text says so."""
    ref = value.get("reference") if type_name == "Reference" and type(value) is dict else value
    if type(ref) is not str:
        return None
    parsed = parse_reference(ref)
    return parsed[0] if parsed else None


# ------------------------------------------------------------------------------------------ evaluation


def _to_bool(col: list[Node]) -> bool | None:
    """FHIRPath singleton evaluation in a boolean context: empty -> None, a single non-boolean -> True."""
    if not col:
        return None
    if len(col) > 1:
        raise FhirPathError("a boolean operand has more than one item")
    v = col[0][0]
    return v if type(v) is bool else True


def _bool(value: bool | None) -> list[Node]:
    return _EMPTY if value is None else [(value, "boolean")]


def _plain(value: Any) -> Any:
    """Values compared as JSON: numbers as Decimal so 1.50 = 1.5 and 1 = 1.0, booleans apart from numbers."""
    if type(value) in (int, float):
        return Decimal(str(value))
    return value


def _equal(a: list[Node], b: list[Node]) -> bool | None:
    if not a or not b:
        return None
    if len(a) != len(b):
        return False
    for (x, _), (y, _) in zip(a, b, strict=True):
        if (type(x) is bool) != (type(y) is bool) or _plain(x) != _plain(y):
            return False
    return True


def _equivalent_value(x: Any, y: Any) -> bool:
    if isinstance(x, str) and isinstance(y, str):
        return " ".join(x.lower().split()) == " ".join(y.lower().split())
    return (type(x) is bool) == (type(y) is bool) and _plain(x) == _plain(y)


def _equivalent(a: list[Node], b: list[Node]) -> bool:
    if len(a) != len(b):
        return False
    rest = [y for y, _ in b]
    for x, _ in a:
        for i, y in enumerate(rest):
            if _equivalent_value(x, y):
                del rest[i]
                break
        else:
            return False
    return True


def _dedupe(col: list[Node]) -> list[Node]:
    """Union semantics: drop repeated values (primitives by value via a set, complex ones by equality)."""
    out: list[Node] = []
    keys: set[tuple[bool, Any]] = set()
    complex_seen: list[Any] = []
    for n in col:
        v = n[0]
        if type(v) is dict or type(v) is list:
            if any(v == c for c in complex_seen):
                continue
            complex_seen.append(v)
        else:
            key = (type(v) is bool, _plain(v))
            if key in keys:
                continue
            keys.add(key)
        out.append(n)
    return out


def _single_string(col: list[Node], what: str) -> str | None:
    if not col:
        return None
    if len(col) > 1 or not isinstance(col[0][0], str):
        raise FhirPathError(f"{what} needs a single string")
    return col[0][0]


# ------------------------------------------------------------------------------------------ compiler


@dataclass(slots=True)
class _Ctx:
    expr: str
    strict: bool
    root_type: str


Compiled = tuple[Fn, frozenset[str]]


def _compile(ast: Ast, in_types: frozenset[str], ctx: _Ctx, at_start: bool = True) -> Compiled:
    kind = ast[0]
    handler = _COMPILERS.get(kind)
    if handler is None:
        raise Unsupported(f"{kind} is not compiled: {ctx.expr!r}")
    return handler(ast, in_types, ctx, at_start)


def _c_ident(ast: Ast, in_types: frozenset[str], ctx: _Ctx, at_start: bool) -> Compiled:
    name = ast[1]
    if at_start and _is_type_name(name):
        return _type_filter(name, in_types)
    return _member(name, None, in_types, ctx)


def _type_filter(name: str, in_types: frozenset[str]) -> Compiled:
    """A type name at the start of a path (`Observation.code`) keeps only values of that type."""
    if in_types and all(t != ANY and is_type(t, name) for t in in_types):
        return (lambda focus, root: focus), in_types  # statically true: no run-time check

    def run(focus: list[Node], root: Node) -> list[Node]:
        return [n for n in focus if is_type(n[1], name)]

    return run, frozenset({name}) if ANY in in_types else frozenset(t for t in in_types if is_type(t, name))


def _member(name: str, only: str | None, in_types: frozenset[str], ctx: _Ctx) -> Compiled:
    out_types = _member_types(in_types, name, only, ctx.strict, ctx.expr)
    tables: dict[str, tuple[tuple[str, str], ...]] = {}

    def run(focus: list[Node], root: Node) -> list[Node]:
        out: list[Node] = []
        for value, typ in focus:
            props = tables.get(typ)
            if props is None:
                props = tables[typ] = _props(typ, name, only)
            if not props or type(value) is not dict:
                continue
            for key, el_type in props:
                x = value.get(key)
                if x is None:
                    continue
                if type(x) is list:
                    for y in x:
                        if y is not None:
                            out.append((y, _resource_type(y, only) if el_type == "Resource" else el_type))
                else:
                    out.append((x, _resource_type(x, only) if el_type == "Resource" else el_type))
        if only is not None and out and any(t == "" for _, t in out):
            out = [n for n in out if n[1]]
        return out

    return run, out_types


def _resource_type(value: Any, only: str | None) -> str:
    """The concrete type of a resource-valued element; "" when an ofType() filter rejects it."""
    rt = value.get("resourceType", "Resource") if type(value) is dict else "Resource"
    if only is not None and not is_type(rt, only):
        return ""
    return rt


def _c_member(ast: Ast, in_types: frozenset[str], ctx: _Ctx, at_start: bool) -> Compiled:
    _, target, name = ast
    return _chain(target, lambda types: _member(name, None, types, ctx), in_types, ctx, at_start)


def _chain(
    target: Ast | None,
    make: Callable[[frozenset[str]], Compiled],
    in_types: frozenset[str],
    ctx: _Ctx,
    at_start: bool,
    empty_stays_empty: bool = True,
) -> Compiled:
    """Compile `target` then the step built by `make` on its result types, fused into one closure.

    Most steps give nothing for nothing, so they are skipped on an empty input; `exists()`, `count()`
    and the like are not (`empty_stays_empty=False`).
    """
    if target is None:
        return make(in_types)
    tfn, ttypes = _compile(target, in_types, ctx, at_start)
    sfn, stypes = make(ttypes)
    if not empty_stays_empty:
        return (lambda focus, root: sfn(tfn(focus, root), root)), stypes

    def run(focus: list[Node], root: Node) -> list[Node]:
        inner = tfn(focus, root)
        return sfn(inner, root) if inner else _EMPTY

    return run, stypes


def _c_index(ast: Ast, in_types: frozenset[str], ctx: _Ctx, at_start: bool) -> Compiled:
    _, target, index = ast
    if index[0] != "lit" or type(index[1]) is not int:
        raise Unsupported(f"only literal indexes are compiled: {ctx.expr!r}")
    i = index[1]
    tfn, ttypes = _compile(target, in_types, ctx, at_start)

    def run(focus: list[Node], root: Node) -> list[Node]:
        col = tfn(focus, root)
        return [col[i]] if 0 <= i < len(col) else _EMPTY

    return run, ttypes


def _c_lit(ast: Ast, in_types: frozenset[str], ctx: _Ctx, at_start: bool) -> Compiled:
    node: list[Node] = [(ast[1], ast[2])]
    return (lambda focus, root: node), frozenset({ast[2]})


def _c_empty(ast: Ast, in_types: frozenset[str], ctx: _Ctx, at_start: bool) -> Compiled:
    return (lambda focus, root: _EMPTY), frozenset()


def _c_this(ast: Ast, in_types: frozenset[str], ctx: _Ctx, at_start: bool) -> Compiled:
    return (lambda focus, root: focus), in_types


_CONSTANTS = {"ucum": "http://unitsofmeasure.org", "sct": "http://snomed.info/sct", "loinc": "http://loinc.org"}


def _c_var(ast: Ast, in_types: frozenset[str], ctx: _Ctx, at_start: bool) -> Compiled:
    name = ast[1]
    if name in ("resource", "rootResource", "context"):
        return (lambda focus, root: [root]), frozenset({ctx.root_type})
    if name in _CONSTANTS:
        node: list[Node] = [(_CONSTANTS[name], "string")]
        return (lambda focus, root: node), frozenset({"string"})
    raise Unsupported(f"%{name} is not compiled: {ctx.expr!r}")


def _c_neg(ast: Ast, in_types: frozenset[str], ctx: _Ctx, at_start: bool) -> Compiled:
    if ast[1][0] == "lit" and type(ast[1][1]) in (int, Decimal):
        node: list[Node] = [(-ast[1][1], ast[1][2])]
        return (lambda focus, root: node), frozenset({ast[1][2]})
    raise Unsupported(f"unary minus is only compiled on literals: {ctx.expr!r}")


def _c_typeop(ast: Ast, in_types: frozenset[str], ctx: _Ctx, at_start: bool) -> Compiled:
    _, op, target, spec = ast
    return _type_function("ofType" if op == "as" else "is", target, spec, in_types, ctx, at_start)


def _type_function(
    fname: str, target: Ast | None, spec: str, in_types: frozenset[str], ctx: _Ctx, at_start: bool
) -> Compiled:
    wanted = _type_name(spec)
    if fname in ("ofType", "as") and _is_member_step(target, at_start):
        # Fused: `value.ofType(Quantity)` only ever reads `valueQuantity`.
        assert target is not None
        inner, name = (target[1], target[2]) if target[0] == "member" else (None, target[1])
        return _chain(inner, lambda types: _member(name, wanted, types, ctx), in_types, ctx, at_start)
    if fname in ("ofType", "as"):

        def make(types: frozenset[str]) -> Compiled:
            def run(focus: list[Node], root: Node) -> list[Node]:
                return [n for n in focus if is_type(n[1], wanted)]

            return run, frozenset({wanted})

        return _chain(target, make, in_types, ctx, at_start)

    def make_is(types: frozenset[str]) -> Compiled:
        def run(focus: list[Node], root: Node) -> list[Node]:
            if not focus:
                return _EMPTY
            return [(all(is_type(t, wanted) for _, t in focus), "boolean")]

        return run, frozenset({"boolean"})

    return _chain(target, make_is, in_types, ctx, at_start)


def _is_member_step(target: Ast | None, at_start: bool) -> bool:
    if target is None:
        return False
    return target[0] == "member" or (target[0] == "ident" and not (at_start and _is_type_name(target[1])))


def _c_binop(ast: Ast, in_types: frozenset[str], ctx: _Ctx, at_start: bool) -> Compiled:
    _, op, left, right = ast
    lfn, ltypes = _compile(left, in_types, ctx, True)
    rfn, rtypes = _compile(right, in_types, ctx, True)
    if op == "|":

        def union(focus: list[Node], root: Node) -> list[Node]:
            a = lfn(focus, root)
            b = rfn(focus, root)
            if not b:
                return _dedupe(a) if len(a) > 1 else a
            return _dedupe(a + b)

        return union, ltypes | rtypes
    make = _BINOPS.get(op)
    if make is None:
        raise Unsupported(f"operator {op!r} is not compiled: {ctx.expr!r}")
    return make(lfn, rfn), frozenset({"boolean"})


def _eq(lfn: Fn, rfn: Fn) -> Fn:
    return lambda focus, root: _bool(_equal(lfn(focus, root), rfn(focus, root)))


def _ne(lfn: Fn, rfn: Fn) -> Fn:
    def run(focus: list[Node], root: Node) -> list[Node]:
        eq = _equal(lfn(focus, root), rfn(focus, root))
        return _bool(None if eq is None else not eq)

    return run


def _equiv(lfn: Fn, rfn: Fn) -> Fn:
    return lambda focus, root: _bool(_equivalent(lfn(focus, root), rfn(focus, root)))


def _not_equiv(lfn: Fn, rfn: Fn) -> Fn:
    return lambda focus, root: _bool(not _equivalent(lfn(focus, root), rfn(focus, root)))


def _and(lfn: Fn, rfn: Fn) -> Fn:
    def run(focus: list[Node], root: Node) -> list[Node]:
        a = _to_bool(lfn(focus, root))
        if a is False:
            return _bool(False)
        b = _to_bool(rfn(focus, root))
        if b is False:
            return _bool(False)
        return _bool(True if a and b else None)

    return run


def _or(lfn: Fn, rfn: Fn) -> Fn:
    def run(focus: list[Node], root: Node) -> list[Node]:
        a = _to_bool(lfn(focus, root))
        if a is True:
            return _bool(True)
        b = _to_bool(rfn(focus, root))
        if b is True:
            return _bool(True)
        return _bool(False if a is False and b is False else None)

    return run


def _xor(lfn: Fn, rfn: Fn) -> Fn:
    def run(focus: list[Node], root: Node) -> list[Node]:
        a, b = _to_bool(lfn(focus, root)), _to_bool(rfn(focus, root))
        return _bool(None if a is None or b is None else a != b)

    return run


def _implies(lfn: Fn, rfn: Fn) -> Fn:
    def run(focus: list[Node], root: Node) -> list[Node]:
        a = _to_bool(lfn(focus, root))
        if a is False:
            return _bool(True)
        b = _to_bool(rfn(focus, root))
        if b is True:
            return _bool(True)
        return _bool(False if a is True and b is False else None)

    return run


def _membership(lfn: Fn, rfn: Fn, swap: bool) -> Fn:
    def run(focus: list[Node], root: Node) -> list[Node]:
        item, col = lfn(focus, root), rfn(focus, root)
        if swap:
            item, col = col, item
        if not item:
            return _EMPTY
        return _bool(any(_equal(item, [n]) for n in col))

    return run


_BINOPS: dict[str, Callable[[Fn, Fn], Fn]] = {
    "=": _eq,
    "!=": _ne,
    "~": _equiv,
    "!~": _not_equiv,
    "and": _and,
    "or": _or,
    "xor": _xor,
    "implies": _implies,
    "in": lambda lfn, rfn: _membership(lfn, rfn, False),
    "contains": lambda lfn, rfn: _membership(lfn, rfn, True),
}


# Functions: name -> builder(target, args, in_types, ctx, at_start) -> Compiled.


def _c_call(ast: Ast, in_types: frozenset[str], ctx: _Ctx, at_start: bool) -> Compiled:
    _, target, name, args = ast
    if name in ("ofType", "as", "is"):
        if len(args) != 1 or args[0][0] != "ident":
            raise FhirPathError(f"{name}() needs a type name: {ctx.expr!r}")
        return _type_function(name, target, args[0][1], in_types, ctx, at_start)
    builder = _FUNCTIONS.get(name)
    if builder is None:
        raise Unsupported(f"{name}() is not compiled: {ctx.expr!r}")
    keep = name not in _ANSWER_EMPTY
    return _chain(target, lambda types: builder(args, types, ctx), in_types, ctx, at_start, keep)


def _arity(args: list[Ast], n: int, name: str, ctx: _Ctx) -> None:
    if len(args) != n:
        raise FhirPathError(f"{name}() takes {n} argument(s): {ctx.expr!r}")


def _f_where(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
    _arity(args, 1, "where", ctx)
    pred = _resolve_is_predicate(args[0])
    if pred is not None:
        return (lambda focus, root: [n for n in focus if pred(n)]), types
    crit, _ = _compile(args[0], types, ctx, True)

    def run(focus: list[Node], root: Node) -> list[Node]:
        return [n for n in focus if _to_bool(crit([n], root)) is True]

    return run, types


def _resolve_is_predicate(arg: Ast) -> Callable[[Node], bool] | None:
    """`where(resolve() is Patient)`: decided from the reference text, without building a stub."""
    if arg[0] == "typeop" and arg[1] == "is" and arg[2] == ("call", None, "resolve", []):
        wanted = _type_name(arg[3])
        return lambda n: (t := reference_type(n[0], n[1])) is not None and is_type(t, wanted)
    return None


def _f_select(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
    _arity(args, 1, "select", ctx)
    proj, ptypes = _compile(args[0], types, ctx, True)

    def run(focus: list[Node], root: Node) -> list[Node]:
        out: list[Node] = []
        for n in focus:
            out.extend(proj([n], root))
        return out

    return run, ptypes


def _f_all(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
    _arity(args, 1, "all", ctx)
    crit, _ = _compile(args[0], types, ctx, True)
    return (lambda focus, root: _bool(all(_to_bool(crit([n], root)) is True for n in focus))), frozenset({"boolean"})


def _f_exists(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
    if args:
        where, _ = _f_where(args, types, ctx)
        return (lambda focus, root: _bool(bool(where(focus, root)))), frozenset({"boolean"})
    return (lambda focus, root: _bool(bool(focus))), frozenset({"boolean"})


def _f_empty(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
    _arity(args, 0, "empty", ctx)
    return (lambda focus, root: _bool(not focus)), frozenset({"boolean"})


def _f_not(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
    _arity(args, 0, "not", ctx)

    def run(focus: list[Node], root: Node) -> list[Node]:
        b = _to_bool(focus)
        return _bool(None if b is None else not b)

    return run, frozenset({"boolean"})


def _f_slice(name: str) -> Callable[[list[Ast], frozenset[str], _Ctx], Compiled]:
    def build(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
        if name in ("skip", "take"):
            _arity(args, 1, name, ctx)
            if args[0][0] != "lit" or type(args[0][1]) is not int:
                raise Unsupported(f"{name}() needs a literal integer: {ctx.expr!r}")
            n = args[0][1]
            if name == "skip":
                return (lambda focus, root: focus[n:]), types
            return (lambda focus, root: focus[:n]), types
        _arity(args, 0, name, ctx)
        if name == "first":
            return (lambda focus, root: focus[:1]), types
        if name == "last":
            return (lambda focus, root: focus[-1:]), types
        if name == "tail":
            return (lambda focus, root: focus[1:]), types

        def single(focus: list[Node], root: Node) -> list[Node]:
            if len(focus) > 1:
                raise FhirPathError("single() on a collection with more than one item")
            return focus

        return single, types

    return build


def _f_count(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
    _arity(args, 0, "count", ctx)
    return (lambda focus, root: [(len(focus), "integer")]), frozenset({"integer"})


def _f_distinct(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
    _arity(args, 0, "distinct", ctx)
    return (lambda focus, root: _dedupe(focus)), types


def _f_trace(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
    return (lambda focus, root: focus), types


def _f_union(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
    _arity(args, 1, "union", ctx)
    other, otypes = _compile(args[0], frozenset({ctx.root_type}), ctx, True)
    return (lambda focus, root: _dedupe(focus + other([root], root))), types | otypes


def _f_combine(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
    _arity(args, 1, "combine", ctx)
    other, otypes = _compile(args[0], frozenset({ctx.root_type}), ctx, True)
    return (lambda focus, root: focus + other([root], root)), types | otypes


def _f_resolve(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
    """A stub `{"resourceType", "id"}` per literal reference: enough for `resolve() is X` / `.ofType(X)`."""
    _arity(args, 0, "resolve", ctx)

    def run(focus: list[Node], root: Node) -> list[Node]:
        out: list[Node] = []
        for value, typ in focus:
            ref = value.get("reference") if typ == "Reference" and type(value) is dict else value
            parsed = parse_reference(ref) if type(ref) is str else None
            if parsed is not None:
                out.append(({"resourceType": parsed[0], "id": parsed[1]}, parsed[0]))
        return out

    return run, frozenset({ANY})


def _f_extension(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
    _arity(args, 1, "extension", ctx)
    if args[0][0] != "lit" or not isinstance(args[0][1], str):
        raise Unsupported(f"extension() needs a literal url: {ctx.expr!r}")
    url = args[0][1]

    def run(focus: list[Node], root: Node) -> list[Node]:
        out: list[Node] = []
        for value, _ in focus:
            if type(value) is dict:
                out.extend((e, "Extension") for e in value.get("extension", ()) if e.get("url") == url)
        return out

    return run, frozenset({"Extension"})


def _f_has_value(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
    _arity(args, 0, "hasValue", ctx)

    def run(focus: list[Node], root: Node) -> list[Node]:
        return _bool(len(focus) == 1 and type(focus[0][0]) not in (dict, list))

    return run, frozenset({"boolean"})


def _string_fn(name: str, op: Callable[[str, str], Any], result_type: str) -> Callable[..., Compiled]:
    def build(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
        _arity(args, 1, name, ctx)
        arg, _ = _compile(args[0], types, ctx, True)

        def run(focus: list[Node], root: Node) -> list[Node]:
            s = _single_string(focus, name)
            a = _single_string(arg(focus, root), name)
            if s is None or a is None:
                return _EMPTY
            return [(op(s, a), result_type)]

        return run, frozenset({result_type})

    return build


def _string_fn0(name: str, op: Callable[[str], Any], result_type: str) -> Callable[..., Compiled]:
    def build(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
        _arity(args, 0, name, ctx)

        def run(focus: list[Node], root: Node) -> list[Node]:
            s = _single_string(focus, name)
            return _EMPTY if s is None else [(op(s), result_type)]

        return run, frozenset({result_type})

    return build


def _to_string(args: list[Ast], types: frozenset[str], ctx: _Ctx) -> Compiled:
    _arity(args, 0, "toString", ctx)

    def run(focus: list[Node], root: Node) -> list[Node]:
        if len(focus) != 1 or type(focus[0][0]) in (dict, list):
            return _EMPTY
        v = focus[0][0]
        return [("true" if v is True else "false" if v is False else str(v), "string")]

    return run, frozenset({"string"})


# Functions with a result for an empty input (the others are skipped when their input is empty).
_ANSWER_EMPTY = frozenset({"exists", "empty", "count", "all", "hasValue", "union", "combine"})

_FUNCTIONS: dict[str, Callable[[list[Ast], frozenset[str], _Ctx], Compiled]] = {
    "where": _f_where,
    "select": _f_select,
    "all": _f_all,
    "exists": _f_exists,
    "empty": _f_empty,
    "not": _f_not,
    "first": _f_slice("first"),
    "last": _f_slice("last"),
    "tail": _f_slice("tail"),
    "skip": _f_slice("skip"),
    "take": _f_slice("take"),
    "single": _f_slice("single"),
    "count": _f_count,
    "distinct": _f_distinct,
    "trace": _f_trace,
    "union": _f_union,
    "combine": _f_combine,
    "resolve": _f_resolve,
    "extension": _f_extension,
    "hasValue": _f_has_value,
    "startsWith": _string_fn("startsWith", str.startswith, "boolean"),
    "endsWith": _string_fn("endsWith", str.endswith, "boolean"),
    "contains": _string_fn("contains", lambda s, a: a in s, "boolean"),
    "matches": _string_fn("matches", lambda s, a: re.search(a, s) is not None, "boolean"),
    "lower": _string_fn0("lower", str.lower, "string"),
    "upper": _string_fn0("upper", str.upper, "string"),
    "length": _string_fn0("length", len, "integer"),
    "toString": _to_string,
}

_COMPILERS: dict[str, Callable[[Ast, frozenset[str], _Ctx, bool], Compiled]] = {
    "ident": _c_ident,
    "member": _c_member,
    "call": _c_call,
    "index": _c_index,
    "binop": _c_binop,
    "typeop": _c_typeop,
    "lit": _c_lit,
    "var": _c_var,
    "this": _c_this,
    "empty": _c_empty,
    "neg": _c_neg,
}


# ------------------------------------------------------------------------------------------ public API


@dataclass(slots=True)
class Evaluator:
    """A compiled expression for one context type. Call it on a resource, or `on()` a collection.

    The returned lists (and the JSON values in them) belong to the resource: treat them as read-only.
    """

    expression: str
    context_type: str
    fn: Fn
    types: frozenset[str]  # static result types (ANY when only known at run time)
    fallback: bool = False  # True when evaluated by fhirpathpy
    text: str = ""  # what was compiled: for a base type only its own union branches
    # The resource's top-level JSON keys the expression starts from: it gives nothing for a resource
    # that has none of them. None: not known (the whole resource, %resource, fhirpathpy, ...).
    reads: frozenset[str] | None = None

    def __call__(self, resource: dict[str, Any]) -> list[Node]:
        node: Node = (resource, resource.get("resourceType", self.context_type))
        return self.fn([node], node)

    def on(self, focus: list[Node], root: Node) -> list[Node]:
        """Evaluate with `focus` as the input collection (e.g. composite components per element)."""
        return self.fn(focus, root)


def union_branches(ast: Ast) -> list[Ast]:
    """The top-level branches of `a | b | (c)` (parentheses are already gone from the AST)."""
    if ast[0] == "binop" and ast[1] == "|":
        return union_branches(ast[2]) + union_branches(ast[3])
    return [ast]


def branch_root(ast: Ast) -> str | None:
    """The type name a branch starts with (`Observation` in `Observation.code.coding`), if any."""
    while True:
        kind = ast[0]
        if kind == "ident":
            return ast[1] if _is_type_name(ast[1]) else None
        if kind in ("member", "index", "typeop") or (kind == "call" and ast[1] is not None):
            ast = ast[2] if kind == "typeop" else ast[1]
        elif kind == "binop" and ast[1] != "|":
            ast = ast[2]
        else:
            return None


def applies_to(root: str | None, base: str) -> bool:
    """Whether a branch rooted at type `root` can match resources of type `base`."""
    return root is None or is_type(base, root) or (base in ("Resource", "DomainResource") and is_type(root, base))


def compile_expression(
    expression: str,
    context: str | Iterable[str],
    *,
    strict: bool = False,
    root_type: str | None = None,
) -> Evaluator:
    """Compile `expression` for values of the `context` type(s): a resource type or backbone paths.

    `root_type` is the type of `%resource` (defaults to the context when that is a resource type).
    Raises FhirPathError when the text is not FHIRPath, or (strict) names elements that do not exist.
    Valid expressions outside the compiled subset are evaluated by fhirpathpy.
    """
    types = frozenset({context} if isinstance(context, str) else context)
    label = context if isinstance(context, str) else " | ".join(sorted(types))
    ast = _parse_or_none(expression, strict)
    if ast is None:
        return _fallback_evaluator(expression, label)
    return _build(expression, ast, types, label, root_type or _root_of(types), strict)


def compile_for_base(expression: str, base: str, *, strict: bool = False) -> Evaluator | None:
    """Like compile_expression for a resource type, keeping only the union branches that apply to it.

    Shared parameters such as clinical-code say `AllergyIntolerance.code | Condition.code | ...`; an
    Observation only needs its own branch, which also saves evaluating the others on every write.
    Returns None when no branch applies to `base`.
    """
    ast = _parse_or_none(expression, strict)
    if ast is None:
        return _fallback_evaluator(expression, base)
    branches = [b for b in union_branches(ast) if applies_to(branch_root(b), base)]
    if not branches:
        return None
    ast = branches[0]
    for b in branches[1:]:
        ast = ("binop", "|", ast, b)
    return _build(expression, ast, frozenset({base}), base, _root_of(frozenset({base})), strict)


def _parse_or_none(expression: str, strict: bool) -> Ast | None:
    """The AST, or None for valid FHIRPath our parser does not handle (then fhirpathpy must parse it)."""
    try:
        return parse(expression)
    except Unsupported:
        return None
    except FhirPathError:
        if strict:  # fhirpathpy's parser recovers from almost anything, so it cannot be the judge
            raise
        return None


def _root_of(types: frozenset[str]) -> str:
    return next((t for t in types if _is_resource_type(t)), "Resource") if len(types) == 1 else "Resource"


def _build(expression: str, ast: Ast, types: frozenset[str], label: str, root_type: str, strict: bool) -> Evaluator:
    try:
        fn, out_types = _compile(ast, types, _Ctx(expression, strict, root_type))
    except Unsupported:
        return _fallback_evaluator(expression, label)
    reads = root_keys(ast, root_type) if types == {root_type} and _is_resource_type(root_type) else None
    return Evaluator(expression, label, fn, out_types, text=unparse(ast), reads=reads)


def root_keys(ast: Ast, root_type: str) -> frozenset[str] | None:
    """The top-level JSON keys of a `root_type` resource that `ast` reads first, when every value it
    can give comes from one of them: a path from the root (`Observation.value.ofType(Quantity)`:
    the value[x] keys), a union of such paths, and steps on them that give nothing for nothing
    (members, where(), ofType(), resolve(), an index, ...). None when that cannot be told."""
    kind = ast[0]
    if kind == "binop":
        if ast[1] != "|":
            return None  # `a or b`, `a = b` ... can answer on empty input
        left, right = root_keys(ast[2], root_type), root_keys(ast[3], root_type)
        return None if left is None or right is None else left | right
    if kind == "ident":  # a member of the root without the type name (`code`), not the root itself
        return None if _is_type_name(ast[1]) else frozenset(k for k, _ in _props(root_type, ast[1], None))
    if kind == "member":
        target = ast[1]
        if target is not None and target[0] == "ident" and _is_type_name(target[1]):
            return frozenset(k for k, _ in _props(root_type, ast[2], None))  # `Observation.code`
        return None if target is None else root_keys(target, root_type)
    if kind == "call":
        target, name = ast[1], ast[2]
        if target is None or name in _ANSWER_EMPTY:
            return None
        return root_keys(target, root_type)
    if kind == "typeop":
        return root_keys(ast[2], root_type)
    if kind == "index":
        return root_keys(ast[1], root_type)
    return None


# ------------------------------------------------------------------------------------------ fallback


def _fallback_evaluator(expression: str, base: str) -> Evaluator:
    return Evaluator(expression, base, _fhirpathpy_fn(expression), frozenset({ANY}), fallback=True, text=expression)


_FP_SYSTEM = {"String": "string", "Boolean": "boolean", "Integer": "integer", "Decimal": "decimal"}


def _fhirpathpy_fn(expression: str) -> Fn:
    """fhirpathpy, compiled once, for expressions outside the compiled subset. Imported only when needed."""
    import fhirpathpy
    from fhirpathpy.engine.nodes import ResourceNode
    from fhirpathpy.models import models

    def resolve(inputs: list[Any]) -> list[Any]:
        out = []
        for value in inputs:
            ref = value.get("reference") if isinstance(value, dict) else value
            parsed = parse_reference(ref) if isinstance(ref, str) else None
            if parsed is not None:
                out.append(ResourceNode.create_node({"resourceType": parsed[0], "id": parsed[1]}, parsed[0]))
        return out

    options = {"returnRawData": True, "userInvocationTable": {"resolve": {"fn": resolve, "arity": {0: []}}}}
    try:
        compiled = fhirpathpy.compile(expression, model=models["r4"], options=options)
    except Exception as exc:  # fhirpathpy raises plain exceptions for syntax errors
        raise FhirPathError(f"cannot compile {expression!r}: {exc}") from None

    def to_node(item: Any) -> Node | None:
        if isinstance(item, ResourceNode):
            path = item.path or "Element"
            if path.startswith("System."):
                path = _FP_SYSTEM.get(path[7:], path[7:])
            return (item.data, path) if item.data is not None else None
        if isinstance(item, bool):
            return (item, "boolean")
        if isinstance(item, int):
            return (item, "integer")
        if isinstance(item, (float, Decimal)):
            return (item, "decimal")
        return (str(item), "string")

    def run(focus: list[Node], root: Node) -> list[Node]:
        out: list[Node] = []
        for value, typ in focus:
            data = value if type(value) is dict and "resourceType" in value else ResourceNode.create_node(value, typ)
            try:
                result = compiled(data, {"resource": root[0], "rootResource": root[0]})
            except Exception as exc:  # evaluation errors surface as FhirPathError like compiled code's
                raise FhirPathError(f"cannot evaluate {expression!r}: {exc}") from None
            out.extend(n for n in map(to_node, result) if n is not None)
        return out

    return run
