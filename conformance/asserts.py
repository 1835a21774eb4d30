"""TestScript asserts: each evaluated against the session's last exchange (or a named source) -> pass/fail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from hearth.capability.outcome import FhirError
from hearth.capability.validation import validate_resource
from hearth.conformance.paths import PathError, as_text, evaluate_expression, evaluate_path
from hearth.conformance.session import Session

CORE_PROFILE = "http://hl7.org/fhir/StructureDefinition/"

RESPONSE_CODES = {
    "okay": 200, "created": 201, "noContent": 204, "notModified": 304, "bad": 400, "forbidden": 403,
    "notFound": 404, "methodNotAllowed": 405, "conflict": 409, "gone": 410, "preconditionFailed": 412,
    "unprocessable": 422,
}


@dataclass
class Outcome:
    result: str  # pass | fail | warning | error (TestReport.setup.action.assert.result codes)
    message: str


class AssertError(Exception):
    """An assert that cannot be evaluated (no response yet, an unknown source, a bad path)."""


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise AssertError(f"'{text}' is not a number") from None


_OPERATORS: dict[str, Callable[[list[str], str], bool]] = {
    "equals": lambda actual, expected: bool(actual) and actual[0] == expected,
    "notEquals": lambda actual, expected: not actual or actual[0] != expected,
    "in": lambda actual, expected: bool(actual) and actual[0] in [e.strip() for e in expected.split(",")],
    "notIn": lambda actual, expected: not actual or actual[0] not in [e.strip() for e in expected.split(",")],
    "greaterThan": lambda actual, expected: bool(actual) and _number(actual[0]) > _number(expected),
    "lessThan": lambda actual, expected: bool(actual) and _number(actual[0]) < _number(expected),
    "empty": lambda actual, expected: not actual or actual == [""],
    "notEmpty": lambda actual, expected: bool(actual) and actual != [""],
    "contains": lambda actual, expected: bool(actual) and expected in actual[0],
    "notContains": lambda actual, expected: not actual or expected not in actual[0],
}


def evaluate(assertion: dict, session: Session, profiles: dict[str, str]) -> Outcome:
    """The outcome of one assert; a failed `warningOnly` assert is a warning."""
    try:
        passed, message = _check(assertion, session, profiles)
    except (AssertError, PathError, TypeError, ValueError, KeyError, AttributeError) as exc:
        # an assert that cannot be judged (bad script, odd response) errs; the run goes on
        return Outcome("warning" if assertion.get("warningOnly") else "error", str(exc) or repr(exc))
    if passed:
        return Outcome("pass", message)
    return Outcome("warning" if assertion.get("warningOnly") else "fail", message)


def _compare(actual: list[str], assertion: dict, session: Session, what: str,
             expected: str | None = None) -> tuple[bool, str]:
    operator = assertion.get("operator") or "equals"
    if expected is None:
        expected = session.substitute(assertion.get("value")) or ""
    if operator == "eval":
        raise AssertError("operator 'eval' is not supported")
    if operator not in _OPERATORS:
        raise AssertError(f"unknown operator '{operator}'")
    shown = actual[0] if len(actual) == 1 else actual
    return _OPERATORS[operator](actual, expected), f"{what}: {shown!r} {operator} {expected!r}"


def _check(assertion: dict, session: Session, profiles: dict[str, str]) -> tuple[bool, str]:
    request_side = assertion.get("direction") == "request"
    source_id = assertion.get("sourceId")
    exchange = session.exchange(source_id if source_id in session.exchanges else None)
    if "minimumId" in assertion:
        return _minimum(assertion, session)
    if "compareToSourceId" in assertion:
        return _compare_to_source(assertion, session)
    if "path" in assertion or "expression" in assertion:
        resource = _source(assertion, session, request_side)
        values = _values(resource, assertion.get("path"), assertion.get("expression"))
        if "value" not in assertion and "operator" not in assertion and assertion.get("expression"):
            return values == [True], f"{assertion['expression']} -> {values!r}"
        return _compare([as_text(v) for v in values], assertion, session, assertion.get("path")
                        or assertion["expression"])
    if exchange is None:
        raise AssertError("no operation has run yet")
    if "responseCode" in assertion:
        expected = session.substitute(assertion["responseCode"]) or ""
        return _compare([str(exchange.status)], assertion, session, "response code", expected)
    if "response" in assertion:
        code = RESPONSE_CODES.get(assertion["response"])
        if code is None:
            raise AssertError(f"unknown response code name '{assertion['response']}'")
        return _compare([str(exchange.status)], assertion, session, "response code", str(code))
    if "contentType" in assertion:
        headers = exchange.request_headers if request_side else exchange.headers
        actual = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        wanted = assertion["contentType"]
        operator = assertion.get("operator") or ("contains" if "/" not in wanted else "equals")
        actual_media = actual.split(";")[0].strip() if operator == "equals" else actual
        return _compare([actual_media], {**assertion, "operator": operator}, session, "Content-Type", wanted)
    if "headerField" in assertion:
        headers = exchange.request_headers if request_side else exchange.headers
        value = {k.lower(): v for k, v in headers.items()}.get(assertion["headerField"].lower())
        return _compare([] if value is None else [value], assertion, session, assertion["headerField"])
    if "resource" in assertion:
        resource = _source(assertion, session, request_side)
        actual = resource.get("resourceType") if isinstance(resource, dict) else None
        return actual == assertion["resource"], f"resource type {actual!r}, expected {assertion['resource']!r}"
    if "requestURL" in assertion:
        return _compare([exchange.url], assertion, session, "request URL", session.substitute(assertion["requestURL"]))
    if "requestMethod" in assertion:
        return _compare([exchange.method.lower()], assertion, session, "request method",
                        assertion["requestMethod"].lower())
    if "navigationLinks" in assertion:
        return _navigation_links(_source(assertion, session, request_side), assertion["navigationLinks"])
    if "validateProfileId" in assertion:
        return _validate(_source(assertion, session, request_side), profiles, assertion["validateProfileId"])
    raise AssertError("the assert names nothing the runner can check")


def _source(assertion: dict, session: Session, request_side: bool) -> Any:
    if request_side:
        exchange = session.exchange(assertion.get("sourceId") if assertion.get("sourceId") in session.exchanges
                                    else None)
        if exchange is None:
            raise AssertError("no request has been sent yet")
        return exchange.request_resource
    try:
        return session.resource(assertion.get("sourceId"))
    except KeyError:
        raise AssertError(f"sourceId '{assertion.get('sourceId')}' names no fixture or response") from None


def _values(resource: Any, path: str | None, expression: str | None) -> list[Any]:
    if resource is None:
        raise AssertError("there is no resource to evaluate against")
    return evaluate_path(resource, path) if path else evaluate_expression(resource, expression or "")


def _compare_to_source(assertion: dict, session: Session) -> tuple[bool, str]:
    compare_id = assertion["compareToSourceId"]
    try:
        other = session.resource(compare_id)
    except KeyError:
        raise AssertError(f"compareToSourceId '{compare_id}' names no fixture or response") from None
    other_path, other_expression = assertion.get("compareToSourcePath"), assertion.get("compareToSourceExpression")
    expected = [as_text(v) for v in _values(other, other_path, other_expression)]
    # with nothing named for this side, the same path/expression is evaluated on the source
    path = assertion.get("path") or (None if assertion.get("expression") else other_path)
    expression = assertion.get("expression") or (None if path else other_expression)
    actual = [as_text(v) for v in _values(_source(assertion, session, False), path, expression)]
    operator = assertion.get("operator") or "equals"
    what = path or expression
    if operator == "equals":
        return actual == expected, f"{what}: {actual!r} equals {expected!r}"
    if operator == "notEquals":
        return actual != expected, f"{what}: {actual!r} notEquals {expected!r}"
    return _compare(actual, assertion, session, what or "", expected[0] if expected else "")


def _minimum(assertion: dict, session: Session) -> tuple[bool, str]:
    minimum_id = assertion["minimumId"]
    if minimum_id not in session.fixtures:
        raise AssertError(f"minimumId '{minimum_id}' names no fixture")
    resource = _source(assertion, session, False)
    missing = _missing(session.fixtures[minimum_id], resource, "")
    return missing is None, f"has every element of '{minimum_id}'" if missing is None else f"missing {missing}"


def _missing(minimum: Any, actual: Any, path: str) -> str | None:
    """The first element of `minimum` absent from `actual` (lists: each item must match some item)."""
    if isinstance(minimum, dict):
        if not isinstance(actual, dict):
            return path or "resource"
        for key, value in minimum.items():
            if key in ("id", "meta", "text") and not path:  # server-assigned or server-generated
                continue
            found = _missing(value, actual.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    if isinstance(minimum, list):
        if not isinstance(actual, list):
            return path
        for item in minimum:
            if all(_missing(item, candidate, path) for candidate in actual):
                return path
        return None
    return None if minimum == actual else f"{path} = {minimum!r}"


def _navigation_links(resource: Any, wanted: bool) -> tuple[bool, str]:
    """A Bundle whose links all have a relation and a URL, `self` among them.

    R4 leaves the check to the engine; first/next/last only exist when a result spans pages, so they are not
    required here.
    """
    if not isinstance(resource, dict) or resource.get("resourceType") != "Bundle":
        return not wanted, "the response is not a Bundle"
    links = {link.get("relation"): link.get("url") for link in resource.get("link", ())}
    ok = bool(links.get("self")) and all(links) and all(links.values())
    return ok == wanted, f"links: {sorted(relation for relation in links if relation)}"


def _validate(resource: Any, profiles: dict[str, str], profile_id: str) -> tuple[bool, str]:
    url = profiles.get(profile_id)
    if url is None:
        raise AssertError(f"validateProfileId '{profile_id}' names no TestScript.profile")
    if not url.startswith(CORE_PROFILE):
        raise AssertError(f"only the base R4 profiles can be validated, not {url}")
    expected_type = url[len(CORE_PROFILE):]
    if not isinstance(resource, dict) or resource.get("resourceType") != expected_type:
        return False, f"not a {expected_type}"
    try:
        validate_resource(resource)
    except FhirError as error:
        return False, f"invalid against {url}: {error.diagnostics}"
    return True, f"valid against {url}"
