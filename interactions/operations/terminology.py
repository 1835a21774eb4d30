"""The terminology operations over the shipped R4 code systems and value sets and those stored in Hearth
(capability/terminology.py): `ValueSet/$expand`, `ValueSet/$validate-code`, `CodeSystem/$lookup` and
`CodeSystem/$subsumes`, each at type and instance level, GET (primitive parameters in the query) or POST (a
Parameters body, which may also carry codings, a CodeableConcept or a whole ValueSet). docs/terminology.md
describes them."""

from __future__ import annotations

from typing import Any

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError
from hearth.capability.terminology import CodeSystemIndex, Expanded, default_terminology
from hearth.interactions import crud
from hearth.interactions.context import Context
from hearth.interactions.request import Outcome, Request
from hearth.storage.clock import to_instant, utc_now

# codes one $expand answers at most: a larger expansion is paged with `count` and `offset` (docs/terminology.md)
EXPANSION_LIMIT = 1000
_DEFINITION = "http://hl7.org/fhir/OperationDefinition/"

Arguments = dict[str, Any]  # parameter name -> its value: text for primitives, a dict for a Coding, resource...


def install(ctx: Context) -> None:
    """Register this module's operations on the context."""
    from hearth.interactions.operations import served  # (the package imports this module before defining it)
    for resource_type, name, handler in (("ValueSet", "expand", expand), ("ValueSet", "validate-code", validate_code),
                                         ("CodeSystem", "lookup", lookup), ("CodeSystem", "subsumes", subsumes)):
        ctx.operations[(resource_type, f"${name}")] = handler
        served(ctx, name, f"{_DEFINITION}{resource_type}-{name}", resource_type)


# --- ValueSet ---------------------------------------------------------------------------------------------

async def expand(ctx: Context, request: Request) -> Outcome:
    """`$expand`: the ValueSet with an expansion (`filter` on code and display, paged by `count` and `offset`)."""
    arguments = _arguments(request)
    resource, codes = await _valueset(ctx, request, arguments)
    text = (arguments.get("filter") or "").strip().lower()
    if text:
        codes = [c for c in codes if text in c.code.lower() or text in (c.display or "").lower()]
    offset = _whole(arguments, "offset", 0)
    count = _whole(arguments, "count", None)
    if count is None and len(codes) - offset > EXPANSION_LIMIT:
        raise FhirError(400, "too-costly", f"The expansion has {len(codes)} codes, more than the {EXPANSION_LIMIT} "
                                           "one answer holds (the expansion limit): page it with count and offset")
    page = codes[offset:offset + min(EXPANSION_LIMIT if count is None else count, EXPANSION_LIMIT)]
    expansion: dict[str, Any] = {"timestamp": _now(), "total": len(codes), "offset": offset}
    echoed = [{"name": name, **({"valueString": arguments[name]} if name == "filter" else
                                {"valueInteger": _whole(arguments, name, 0)})}
              for name in ("filter", "count", "offset") if arguments.get(name) not in (None, "")]
    if echoed:
        expansion["parameter"] = echoed
    if page:
        expansion["contains"] = [_coding(c) for c in page]
    answer = {key: resource[key] for key in ("id", "url", "version", "name", "title") if key in resource}
    return _answer({"resourceType": "ValueSet", **answer, "status": resource.get("status", "active"),
                    "expansion": expansion})


async def validate_code(ctx: Context, request: Request) -> Outcome:
    """`$validate-code`: whether a code (`code` with `system`, a `coding` or a `codeableConcept`) is in the
    ValueSet, and whether a `display` given is one of the code's."""
    arguments = _arguments(request)
    _, codes = await _valueset(ctx, request, arguments)
    codings = _codings(arguments)
    for system, code, display in codings:
        found = next((c for c in codes if c.code == code and (system is None or c.system == system)), None)
        if found is None:
            continue
        if display is not None and not _displays_match(found, display):
            return _parameters(result=False, display=found.display,
                               message=f"'{display}' is not a display of {found.system}#{code}; "
                                       f"it is '{found.display}'")
        return _parameters(result=True, display=found.display)
    listed = ", ".join(f"{system or '(no system)'}#{code}" for system, code, _ in codings)
    return _parameters(result=False, message=f"{listed} is not in the value set")


async def _valueset(ctx: Context, request: Request, arguments: Arguments) -> tuple[dict[str, Any], list[Expanded]]:
    """The ValueSet asked about (the instance, one in the body, or `url` with `valueSetVersion`) and its codes.
    404 when unknown; 400 when Hearth cannot expand it (docs/terminology.md says which ones it can)."""
    terminology = default_terminology()
    given = await _instance(ctx, request, "ValueSet") if request.id else arguments.get("valueSet")
    if isinstance(given, dict):
        codes = terminology.expand_resource(given)
        name = f"ValueSet/{request.id}" if request.id else "the ValueSet given"
        resource = given
    else:
        url = arguments.get("url")
        if not isinstance(url, str) or not url:
            raise FhirError(400, "required", "Name the ValueSet: url (or post it as the valueSet parameter, or use "
                                             "ValueSet/[id]/$" + (request.operation or "").lstrip("$"))
        version = arguments.get("valueSetVersion")
        canonical = f"{url}|{version}" if version else url
        if not terminology.has_valueset(canonical):
            raise FhirError(404, "not-found", f"Unknown ValueSet {canonical}")
        codes, name = terminology.expansion(canonical), canonical
        resource = {"url": url, **({"version": version} if version else {})}
    if codes is None:
        raise FhirError(400, "not-supported", f"Hearth cannot expand {name}: it draws on a code system Hearth does "
                                              "not hold whole, or on a filter it does not evaluate")
    return resource, codes


def _displays_match(found: Expanded, display: str) -> bool:
    """Whether `display` is the code's (as the ValueSet or its CodeSystem gives it, or a designation), ignoring
    case."""
    shown = {found.display}
    known = default_terminology().code_system(found.system) if found.system else None
    if known is not None:
        shown |= {known.display(found.code), *(value for _, _, value in known.designations(found.code))}
    return display.strip().lower() in {d.strip().lower() for d in shown if d}


# --- CodeSystem -------------------------------------------------------------------------------------------

async def lookup(ctx: Context, request: Request) -> Outcome:
    """`$lookup`: a code's CodeSystem name and version, display, designations and is-a neighbours."""
    arguments = _arguments(request)
    coding = arguments.get("coding")
    if isinstance(coding, dict):
        arguments = {**arguments, "system": coding.get("system"), "code": coding.get("code"),
                     "version": coding.get("version") or arguments.get("version")}
    known = await _code_system(ctx, request, arguments)
    code = _known_code(known, arguments.get("code"), "code")
    parameters: list[dict[str, Any]] = [{"name": "name", "valueString": known.name or known.url}]
    if known.version:
        parameters.append({"name": "version", "valueString": known.version})
    if known.display(code):
        parameters.append({"name": "display", "valueString": known.display(code)})
    for language, use, value in known.designations(code):
        parts = [*([{"name": "language", "valueCode": language}] if language else []),
                 *([{"name": "use", "valueCoding": {"code": use}}] if use else []),
                 {"name": "value", "valueString": value}]
        parameters.append({"name": "designation", "part": parts})
    for kind, related in (("parent", known.parents(code)), ("child", known.children(code))):
        for other in sorted(related):
            parameters.append({"name": "property", "part": [{"name": "code", "valueCode": kind},
                                                            {"name": "value", "valueCode": other}]})
    return _answer({"resourceType": "Parameters", "parameter": parameters})


async def subsumes(ctx: Context, request: Request) -> Outcome:
    """`$subsumes`: how codeA relates to codeB in the CodeSystem's is-a hierarchy."""
    arguments = _arguments(request)
    for side in ("A", "B"):
        coding = arguments.get(f"coding{side}")
        if isinstance(coding, dict):
            if arguments.get("system") not in (None, coding.get("system")):
                raise FhirError(400, "invalid", "codingA and codingB (and system) name different code systems")
            arguments = {**arguments, "system": coding.get("system"), f"code{side}": coding.get("code")}
    known = await _code_system(ctx, request, arguments)
    a = _known_code(known, arguments.get("codeA"), "codeA")
    b = _known_code(known, arguments.get("codeB"), "codeB")
    outcome = "equivalent" if a == b else "subsumes" if b in known.closure(a, True) else \
        "subsumed-by" if a in known.closure(b, True) else "not-subsumed"
    return _answer({"resourceType": "Parameters", "parameter": [{"name": "outcome", "valueCode": outcome}]})


async def _code_system(ctx: Context, request: Request, arguments: Arguments) -> CodeSystemIndex:
    """The CodeSystem asked about (the instance, or `system` with `version`); 404 when unknown."""
    if request.id:
        stored = await _instance(ctx, request, "CodeSystem")
        system, version = stored.get("url"), stored.get("version")
    else:
        system, version = arguments.get("system"), arguments.get("version")
    if not isinstance(system, str) or not system:
        raise FhirError(400, "required", "Name the code system: system (or a coding, or use CodeSystem/[id]/"
                                         f"{request.operation})")
    known = default_terminology().code_system(system, version if isinstance(version, str) else None)
    if known is None:
        raise FhirError(404, "not-found", f"Unknown code system {system}")
    return known


def _known_code(known: CodeSystemIndex, code: Any, name: str) -> str:
    if not isinstance(code, str) or not code:
        raise FhirError(400, "required", f"The operation needs {name}")
    if code not in known.codes:
        raise FhirError(404, "not-found", f"Unknown code '{code}' in code system {known.url}")
    return code


# --- parameters -------------------------------------------------------------------------------------------

async def _instance(ctx: Context, request: Request, resource_type: str) -> dict[str, Any]:
    if request.type != resource_type:
        raise FhirError(400, "not-supported", f"{request.operation} is an operation on {resource_type}")
    version = await crud.read(ctx, resource_type, request.id or "")
    return fhir_json.loads(version.body, trusted=True)


def _arguments(request: Request) -> Arguments:
    """The query's parameters, then a Parameters body's (codings, CodeableConcepts and resources as dicts)."""
    arguments: Arguments = dict(request.params)
    body = request.body
    if isinstance(body, (bytes, bytearray)) and body:
        body = fhir_json.loads(body)
    if body is None:
        return arguments
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(400, "invalid", "The body of a terminology operation is a Parameters resource")
    for parameter in body.get("parameter") or []:
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if not isinstance(name, str):
            continue
        if isinstance(parameter.get("resource"), dict):
            arguments[name] = parameter["resource"]
            continue
        value = next((v for k, v in parameter.items() if k.startswith("value")), None)
        if isinstance(value, bool):
            value = "true" if value else "false"
        if value is not None:
            arguments[name] = value if isinstance(value, dict) else str(value)
    return arguments


def _codings(arguments: Arguments) -> list[tuple[str | None, str, str | None]]:
    """(system, code, display) of each coding `$validate-code` is given: `code`, a `coding` or a
    `codeableConcept`'s."""
    display = arguments.get("display") if isinstance(arguments.get("display"), str) else None
    if isinstance(arguments.get("code"), str):
        system = arguments.get("system")
        return [(system if isinstance(system, str) else None, arguments["code"], display)]
    if isinstance(arguments.get("coding"), dict):
        listed = [arguments["coding"]]
    elif isinstance(arguments.get("codeableConcept"), dict):
        listed = arguments["codeableConcept"].get("coding") or []
    else:
        raise FhirError(400, "required", "Give the code to validate: code (with system), coding or codeableConcept")
    codings = [(c.get("system"), c["code"], c.get("display") or display) for c in listed
               if isinstance(c, dict) and isinstance(c.get("code"), str)]
    if not codings:
        raise FhirError(400, "required", "The coding or codeableConcept given holds no code")
    return codings


def _whole(arguments: Arguments, name: str, default: int | None) -> int | None:
    value = arguments.get(name)
    if value in (None, ""):
        return default
    if not isinstance(value, str) or not value.isdigit() or len(value) > 9:
        raise FhirError(400, "invalid", f"{name} is a whole number, not '{str(value)[:40]}'")
    return int(value)


def _coding(expanded: Expanded) -> dict[str, str]:
    return {key: value for key, value in zip(("system", "code", "display"), expanded) if value is not None}


def _parameters(result: bool, display: str | None = None, message: str | None = None) -> Outcome:
    parameters: list[dict[str, Any]] = [{"name": "result", "valueBoolean": result}]
    if message:
        parameters.append({"name": "message", "valueString": message})
    if display:
        parameters.append({"name": "display", "valueString": display})
    return _answer({"resourceType": "Parameters", "parameter": parameters})


def _answer(resource: dict[str, Any]) -> Outcome:
    return Outcome(200, body=fhir_json.dumps(resource))


def _now() -> str:
    return to_instant(utc_now())
