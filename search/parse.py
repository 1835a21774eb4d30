"""Query string -> search IR (search/ir.py), per the R4 search page (http://hl7.org/fhir/R4/search.html).

A value is read by its parameter type's module (search/params/), which resolves its whole meaning into the
predicate (token keys, negation, the comparisons a prefix stands for); this module holds what all types share:
parameters and modifiers, chains, `_has`, `_list` and the result parameters.

Errors. Two kinds, told apart on purpose:
- something the server does not know or support: an unknown parameter, an unknown modifier or one not
  valid for the parameter's type, a chain through a non-reference, `:in` without a terminology service,
  a functional `_list`. Strict (`Prefer: handling=strict`): FhirError 400 naming the parameter. Lenient
  (the default): the whole parameter is left out and listed in `Query.ignored` with the reason, as the
  spec says servers SHOULD do with parameters they do not understand.
- a known parameter with a value it cannot mean (`date=notadate`, `_count=-1`, a token with two `|`,
  an unknown ValueSet for `:in`): always FhirError 400, as HAPI does; ignoring it would silently widen
  the result to resources the client did not ask for.
Empty values (`name=` or the empty parts of `a,,b`) are ignored, as HAPI does.

Choices the spec leaves open:
- `:not` and `:not-in` with several values (`code:not=a,b`) mean "neither a nor b" (one clause per value),
  as R5 clarifies and HAPI does; `code=a,b` is of course "a or b".
- a prefix is read only for number, date and quantity parameters; elsewhere `ge…` is part of the value
  (a string `gender=ge` cannot be told from a prefixed one).
- `ap` widens the search range by 10% of the value (numbers) or of the gap to now (dates), here, so
  backends and the matcher only test overlap.
- a date value with a space where its `+hh:mm` zone was (an unencoded `+` in the URL) is read as `+`.
- a chain without `:Type` covers every target type that has the chained parameter (one ChainPred per
  group of types with the same compiled sub-query); `_list=id` becomes `_has:List:item:_id=id`.
- the rest of a chain is parsed once for all the target types on which its next parameter has the same type
  (the reference parameters' targets merged), not once per target type: that would cost (target types per
  level) ** levels. A type's reference can only name its own parameter's targets, so the merge adds no match.
- `_sort` keys repeating an earlier key's parameter are dropped: they cannot change the order.
- a uri `:above` value means any of its prefixes, so each prefix counts as one of the parameter's values.

Cost bounds (search/limits.py; each a setting, refused with 400 `too-costly` under strict and lenient handling):
chain and `_has` levels in one parameter, comma-separated values in one parameter, parameters in one search.
- `_count=0` (and `_summary=count`) ask for the count only: count 0 and, unless `_total` says otherwise,
  total "accurate". `_count` above `max_count` is cut to `max_count`.
- the paging cursor travels as `_cursor` (read by search/paging.py); `_format` and `_pretty` are the server's
  business and skipped.
- what `_include` and `_revinclude` bring along is bounded by `max_count` too (`Query.include_limit`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from hearth.capability.outcome import FhirError
from hearth.capability.resource_types import RESOURCE_TYPES, is_resource_type, is_valid_id
from hearth.search.ir import ChainPred, Clause, HasPred, Include, MissingPred, Query, SortKey
from hearth.search.limits import SearchLimits, too_costly
from hearth.search.normalize import whole_number
from hearth.search.params import TYPES, token
from hearth.search.params.common import BadValue, Terminology, Unsupported, split, unescape

_TOTALS = {"none", "estimate", "accurate"}
_SUMMARIES = {"true", "text", "data", "count", "false"}
_SKIPPED = {"_format", "_pretty"}
_ANY_TYPE = min(RESOURCE_TYPES)  # Resource-level parameters (`_id`, …) are defined on every type
_NEXT_CODE = re.compile(r"[^:.]+")


class _Parser:
    """One search's parsing state: registry, terminology, base URL and the moment `ap` is relative to (what a
    parameter type's parsing may ask for: search/params/common.py ParseContext)."""

    def __init__(self, registry: Any, terminology: Terminology | None, base_url: str, limits: SearchLimits) -> None:
        self.registry = registry
        self.terminology = terminology
        self.base_url = base_url
        self.limits = limits
        self.now = datetime.now(timezone.utc).replace(tzinfo=None)

    # --- parameters ------------------------------------------------------------------------------

    def param(self, types: tuple[str, ...], code: str) -> Any:
        """The SearchParam `code` on all of `types` (Resource-level ones when `types` is empty)."""
        if not types:
            found = self.registry.get(_ANY_TYPE, code)
            if found is None or "Resource" not in found.base:
                raise Unsupported(f"unknown search parameter {code!r} for a search across all types")
            return found
        params = [self.registry.get(t, code) for t in types]
        missing = [t for t, p in zip(types, params) if p is None]
        if missing:
            reasons = {reason for param, reason in self.registry.unsupported(missing[0]) if param.code == code}
            if reasons:
                raise Unsupported(f"search parameter {code!r} is not supported: {'; '.join(sorted(reasons))}")
            raise Unsupported(f"unknown search parameter {code!r} for {', '.join(missing)}")
        if len({p.type for p in params}) > 1:
            raise Unsupported(f"search parameter {code!r} has different types on {', '.join(types)}")
        if len(params) > 1 and params[0].type == "reference":
            return replace(params[0], target=tuple(dict.fromkeys(t for p in params for t in p.target)))
        return params[0]

    def clauses(self, types: tuple[str, ...], key: str, raw: str, depth: int = 0) -> list[Clause]:
        """The clauses (ANDed) of one `key=raw` occurrence, `depth` chain and `_has` levels down."""
        if key.startswith("_has:"):
            return [self.has(types, key, raw, self.deeper(depth))]
        if key == "_list":
            return [self.list_(raw)]
        head, dot, rest = key.partition(".")
        code, colon, modifier = head.partition(":")
        param = self.param(types, code)
        if dot:
            return [self.chain(param, modifier if colon else None, rest, raw, self.deeper(depth))]
        clauses = self.values(param, modifier if colon else None, raw)
        if param.type == "date" and types and all(self.registry.single_date(t, code) for t in types):
            clauses = [replace(clause, single_date=True) for clause in clauses]
        return clauses

    def values(self, param: Any, modifier: str | None, raw: str) -> list[Clause]:
        kind = TYPES.get(param.type)
        if kind is None or not param.expression:
            raise Unsupported(f"search parameter {param.code!r} ({param.type}) is not supported")
        texts = [text for text in split(raw, ",") if text]
        if modifier == "missing":
            preds: list[Any] = [MissingPred(self.boolean(text)) for text in texts]
        else:
            self.check_modifier(param, modifier)
            preds = [kind.parse(self, param, modifier, text) for text in texts]
        if not preds:
            return []
        if param.type == "token" and modifier in token.NEGATED:  # neither this nor that: one clause per value
            return [Clause(param.code, param.type, (pred,)) for pred in preds]
        return [Clause(param.code, param.type, tuple(preds))]

    def check_modifier(self, param: Any, modifier: str | None) -> None:
        if modifier is None or modifier in TYPES[param.type].MODIFIERS:
            return
        if param.type == "reference" and is_resource_type(modifier):
            if param.target and modifier not in param.target:
                raise Unsupported(f"{modifier} is not a target type of {param.code!r}")
            return
        raise Unsupported(f"modifier :{modifier} is not supported on {param.code!r} ({param.type})")

    def deeper(self, depth: int) -> int:
        """The level of a chain or `_has` step below `depth`, refused past HEARTH_SEARCH_MAX_CHAIN_DEPTH."""
        if depth >= self.limits.max_chain_depth:
            raise too_costly("search_max_chain_depth", self.limits.max_chain_depth,
                             f"A chain or _has more than {self.limits.max_chain_depth} levels deep")
        return depth + 1

    def chain(self, param: Any, modifier: str | None, rest: str, raw: str, depth: int) -> Clause:
        if param.type != "reference":
            raise Unsupported(f"cannot chain through {param.code!r}: it is not a reference parameter")
        if modifier is not None:
            self.check_modifier(param, modifier)
            if not is_resource_type(modifier):
                raise Unsupported(f"modifier :{modifier} cannot start a chain")
        targets = (modifier,) if modifier else param.target
        next_code = _NEXT_CODE.match(rest)
        if next_code is None:
            raise Unsupported(f"empty chain after {param.code!r}")
        kinds: dict[tuple, list[str]] = {}  # the targets with the next parameter, by what it is there
        for target in targets:
            found = self.registry.get(target, next_code.group())
            if found is not None:
                kinds.setdefault((found.type, found.components), []).append(target)
        if not kinds:
            raise Unsupported(f"no target type of {param.code!r} has a parameter {next_code.group()!r}")
        groups: dict[tuple[Clause, ...], list[str]] = {}
        for kind in kinds.values():
            groups.setdefault(tuple(self.clauses(tuple(kind), rest, raw, depth)), []).extend(kind)
        return Clause(param.code, "reference", tuple(ChainPred(tuple(ts), where) for where, ts in groups.items()))

    def has(self, types: tuple[str, ...], key: str, raw: str, depth: int) -> Clause:
        parts = key.split(":", 3)
        if len(parts) != 4 or not parts[3]:
            raise Unsupported("_has needs the form _has:Type:reference:parameter")
        _, source_type, source_code, rest = parts
        if not is_resource_type(source_type):
            raise Unsupported(f"_has: unknown resource type {source_type!r}")
        source = self.param((source_type,), source_code)
        if source.type != "reference":
            raise Unsupported(f"_has: {source_type}.{source_code} is not a reference parameter")
        if types and source.target and not set(types) & set(source.target):
            raise Unsupported(f"_has: {source_type}.{source_code} cannot refer to {', '.join(types)}")
        where = tuple(self.clauses((source_type,), rest, raw, depth))
        return Clause("_has", "special", (HasPred(source_type, source_code, where),))

    def list_(self, raw: str) -> Clause:
        ids = [unescape(text) for text in split(raw, ",") if text]
        if any(not is_valid_id(list_id) for list_id in ids):
            raise Unsupported("only lists given by id are supported (no functional lists)")
        by_id = Clause("_id", "token", tuple(token.code(None, list_id) for list_id in ids))
        return Clause("_has", "special", (HasPred("List", "item", (by_id,)),))

    def boolean(self, text: str) -> bool:
        if text not in ("true", "false"):
            raise BadValue(":missing takes true or false")
        return text == "true"

    # --- result parameters -----------------------------------------------------------------------

    def sort_key(self, types: tuple[str, ...], text: str) -> SortKey:
        descending = text.startswith("-")
        param = self.param(types, text[1:] if descending else text)
        if param.type in ("composite", "special"):
            raise Unsupported(f"cannot sort by {param.code!r} ({param.type})")
        return SortKey(param.code, param.type, descending)

    def include(self, text: str, reverse: bool, iterate: bool) -> Include:
        if text == "*":
            return Include("*", "*", None, reverse, iterate)
        parts = text.split(":")
        if len(parts) not in (2, 3) or not is_resource_type(parts[0]):
            raise BadValue("expected SourceType:parameter[:TargetType] or *")
        source, code = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if target is not None and not is_resource_type(target):
            raise BadValue(f"unknown target type {target!r}")
        if code != "*":
            param = self.param((source,), code)
            if param.type != "reference":
                raise Unsupported(f"{source}.{code} is not a reference parameter")
            if target is not None and param.target and target not in param.target:
                raise Unsupported(f"{target} is not a target type of {source}.{code}")
        return Include(source, code, target, reverse, iterate)


def _values(value: str) -> list[str]:
    """The non-empty comma-separated values of a parameter (escaped commas do not separate)."""
    return [text for text in split(value, ",") if text]


def _bounded(params: list[tuple[str, str]], limits: SearchLimits) -> list[tuple[str, str]]:
    """The parameters that count (not empty, not formatting), refused past the limits on their number and values."""
    counted = [(name, value) for name, value in params if name not in _SKIPPED and _values(value)]
    if len(counted) > limits.max_parameters:
        raise too_costly("search_max_parameters", limits.max_parameters, f"A search with {len(counted)} parameters")
    for name, value in counted:
        if len(_values(value)) > limits.max_values:
            raise too_costly("search_max_values", limits.max_values,
                             f"Search parameter '{name}' with {len(_values(value))} values")
    return counted


def parse_search(types: tuple[str, ...], params: list[tuple[str, str]], *, registry: Any, strict: bool,
                 default_count: int, max_count: int, base_url: str, terminology: Terminology | None = None,
                 limits: SearchLimits = SearchLimits()) -> Query:
    """The Query for a search on `types` (empty: all types) with these decoded query parameters."""
    params = _bounded(params, limits)
    parser = _Parser(registry, terminology, base_url, limits)
    ignored: list[str] = []
    used: list[tuple[str, str]] = []
    where: list[Clause] = []
    sort: list[SortKey] = []
    includes: list[Include] = []
    settings: dict[str, Any] = {}

    types = tuple(types)
    system_level = not types
    type_values = [value for name, value in params if name == "_type"]
    if system_level and type_values:
        types = tuple(dict.fromkeys(t for value in type_values for t in value.split(",") if t))
        unknown = [t for t in types if not is_resource_type(t)]
        if unknown:
            raise FhirError(400, "invalid", f"Search parameter '_type': unknown resource type(s) {', '.join(unknown)}")

    for name, value in params:
        code, _, modifier = name.partition(":")
        try:
            if name == "_type":
                if not system_level:
                    raise Unsupported("_type is only for a search across all types")
            elif name == "_cursor":
                settings["cursor"] = value
                continue
            elif name == "_count":
                try:
                    settings["count"] = whole_number(value, max_count)
                except ValueError as problem:
                    raise BadValue(str(problem)) from None
                value = str(settings["count"])
            elif name == "_total":
                if value not in _TOTALS:
                    raise BadValue(f"expected one of {', '.join(sorted(_TOTALS))}")
                settings["total"] = value
            elif name == "_summary":
                if value not in _SUMMARIES:
                    raise BadValue(f"expected one of {', '.join(sorted(_SUMMARIES))}")
                settings["summary"] = value
            elif name == "_elements":
                settings["elements"] = tuple(e.strip() for e in value.split(",") if e.strip())
            elif name == "_sort":
                keys = []
                for text in value.split(","):
                    if text.strip("-"):
                        try:
                            key = parser.sort_key(types, text)
                        except Unsupported as problem:
                            _lenient(strict, "_sort", text, problem, ignored)
                            continue
                        if all(key.param != known.param for known in (*sort, *keys)):
                            keys.append(key)
                sort.extend(keys)
                value = ",".join(("-" if k.descending else "") + k.param for k in keys)
                if not keys:
                    continue
            elif code in ("_include", "_revinclude"):
                if modifier not in ("", "iterate", "recurse"):
                    raise Unsupported(f"modifier :{modifier} is not supported on {code}")
                includes.append(parser.include(value, code == "_revinclude", bool(modifier)))
            elif code in ("_sort", "_count", "_total", "_summary", "_elements", "_cursor", "_type"):
                raise Unsupported(f"{code} takes no modifier")
            else:
                clauses = parser.clauses(types, name, value)
                if not clauses:
                    continue
                where.extend(clauses)
        except Unsupported as problem:
            _lenient(strict, name, value, problem, ignored)
            continue
        except BadValue as problem:
            raise FhirError(400, "invalid", f"Search parameter '{name}': invalid value {_shown(value)!r}: {problem}") \
                from None
        used.append((name, value))

    count = settings.get("count", default_count)
    total = settings.get("total")
    if settings.get("summary") == "count":
        count = 0
    if total is None:
        total = "accurate" if count == 0 else "none"
    return Query(types=types, where=tuple(where), sort=tuple(sort), count=count, cursor=settings.get("cursor"),
                 includes=tuple(includes), total=total, summary=settings.get("summary"),
                 elements=settings.get("elements", ()), ignored=tuple(ignored), used=tuple(used),
                 include_limit=max_count)


def _lenient(strict: bool, name: str, value: str, problem: Exception, ignored: list[str]) -> None:
    """Raise the strict-mode 400, or note the parameter as left out."""
    if strict:
        raise FhirError(400, "not-supported", f"Search parameter '{name}': {problem}")
    ignored.append(f"{name}={_shown(value)}: {problem}")


def _shown(value: str) -> str:
    """A value as a message quotes it: its start, when it is long (it may be thousands of digits)."""
    return value if len(value) <= 100 else value[:100] + "…"


_SAFE = ":/|,$*-._~!'()@"


def canonical_query_string(query: Query) -> str:
    """The query string of the parameters the search applied (for the Bundle's self link)."""
    return "&".join(f"{quote(name, safe=_SAFE)}={quote(value, safe=_SAFE)}" for name, value in query.used)
