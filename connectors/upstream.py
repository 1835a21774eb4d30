"""Talking to one upstream FHIR server through everything it throws: a timeout on every call; retries with
exponential backoff and full jitter, honouring `Retry-After` (delta seconds or an HTTP date) on 429 and 503; the
upstream's circuit breaker; a rate limit and a bound on requests in flight; an expired token renewed once on 401.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

import aiohttp
import orjson

from hearth.capability import fhir_json
from hearth.connectors.auth import AuthError, Authenticator, KeyProblem
from hearth.connectors.circuit import Circuit
from hearth.connectors.config import ConnectorConfig

log = logging.getLogger("hearth.connectors")
_RETRIED = frozenset({408, 429, 500, 502, 503, 504})
_BACKOFF_BASE = 0.5  # seconds before the first retry, doubling
_BACKOFF_CAP = 30.0
_RETRY_AFTER_CAP = 300.0  # a Retry-After longer than this is taken as this (the pass fails after the retries)
FHIR_JSON = "application/fhir+json"


class UpstreamError(Exception):
    """A request the upstream did not answer usefully (after the retries, where retrying made sense)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as FHIR JSON (decimals exact)."""
        try:
            return fhir_json.loads(self.body)
        except fhir_json.JsonSyntaxError:
            raise UpstreamError(f"the upstream answered {self.status} with a body that is not JSON") from None


class RateLimit:
    """At most `rate` requests per second (a token bucket of one second's worth)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.tokens = max(1.0, rate)
        self.updated = clock()
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self.lock:
            while True:
                now = self.clock()
                self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self.tokens) / self.rate)


class Upstream:
    def __init__(self, config: ConnectorConfig, circuit: Circuit,
                 observe: Callable[[float], None] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.config = config
        self.base = config.base
        self.circuit = circuit
        self.observe = observe  # request latency, seconds (metrics)
        self.sleep = sleep
        self.auth = Authenticator(config.auth, config.base, config.timeout)
        self.rate = RateLimit(config.rate)
        self.in_flight = asyncio.Semaphore(config.concurrency)
        self.timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "Hearth connector"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path_or_url: str) -> str:
        return path_or_url if path_or_url.startswith(("http://", "https://")) else f"{self.base}/{path_or_url}"

    async def get_json(self, path_or_url: str, params: Mapping[str, str] | None = None,
                       headers: Mapping[str, str] | None = None) -> Any:
        """A JSON answer; one that does not parse (a truncated body) is retried like a failed request."""
        attempt = 0
        while True:
            answer = await self.request("GET", path_or_url, params=params, headers=headers)
            try:
                return answer.json()
            except UpstreamError as error:
                self.circuit.failed()
                attempt = await self.again(f"GET {self.url(path_or_url)}: {error}", answer.status, attempt)

    async def request(self, method: str, path_or_url: str, *, params: Mapping[str, str] | None = None,
                      headers: Mapping[str, str] | None = None, expect: tuple[int, ...] = (200,)) -> Answer:
        """The upstream's answer with a status in `expect`; UpstreamError after the retries (or at once for an
        answer retrying cannot change, such as 404); CircuitOpen while the upstream's circuit is open."""
        url = self.url(path_or_url)
        renewed = False
        attempt = 0
        status: int | None = None  # the last answer's, for the caller to tell a refusal from a network failure
        while True:
            probe = await self.circuit.admit()
            try:  # the probe's slot is given back whatever the attempt ends in (cancelled, a 401, a 429)
                try:
                    answer = await self._send(method, url, params, headers)
                except KeyProblem:  # Hearth's own key: no upstream failure, nothing to retry
                    raise
                except (aiohttp.ClientError, asyncio.TimeoutError, AuthError) as error:
                    self.circuit.failed()
                    problem = f"{method} {url}: {type(error).__name__} {error}".strip()
                    delay, status = None, None
                else:
                    if answer.status == 401 and self.auth.renewable and not renewed:
                        self.auth.renew()  # an expired token: one new one, not counted as an attempt
                        renewed = True
                        continue
                    if answer.status in expect:
                        self.circuit.succeeded()
                        return answer
                    if answer.status not in _RETRIED:
                        self.circuit.succeeded()  # the upstream is up; the request is what it refuses
                        raise UpstreamError(f"{method} {url} answered {answer.status}: {_diagnostics(answer)}",
                                            answer.status)
                    if answer.status != 429:  # being told to slow down is not the upstream failing
                        self.circuit.failed()
                    problem = f"{method} {url} answered {answer.status}"
                    delay, status = retry_after(answer.headers.get("Retry-After")), answer.status
            finally:
                self.circuit.release(probe)
            attempt = await self.again(problem, status, attempt, delay)

    async def again(self, problem: str, status: int | None, attempt: int, delay: float | None = None) -> int:
        """After failed attempt number `attempt` (0 the first): UpstreamError if it was the last; else wait
        (`delay`, the upstream's Retry-After, or a backoff) and give the next attempt's number."""
        self.circuit.last_failure = problem
        if attempt >= self.config.retries:
            raise UpstreamError(f"{problem} (after {attempt + 1} attempts)", status)
        attempt += 1
        log.info("connector %s: %s; retry %d of %d", self.config.name, problem, attempt, self.config.retries)
        await self.sleep(delay if delay is not None else backoff(attempt))
        return attempt

    async def _send(self, method: str, url: str, params: Mapping[str, str] | None,
                    headers: Mapping[str, str] | None) -> Answer:
        await self.rate.wait()
        async with self.in_flight:
            sent = {"Accept": FHIR_JSON, **(headers or {}), **await self.auth.headers(self.session)}
            started = time.perf_counter()
            async with self.session.request(method, url, params=params, headers=sent,
                                            timeout=self.timeout) as response:
                body = await response.read()
            if self.observe is not None:
                self.observe(time.perf_counter() - started)
            return Answer(response.status, response.headers, body)

    async def lines(self, url: str, skip: int = 0, authorized: bool = True) -> AsyncIterator[bytes]:
        """The non-empty lines of an NDJSON file, streamed (never the whole file in memory), after the first
        `skip`; a download that fails is retried like any request, skipping what was already given. `authorized`:
        sent with the token (a Bulk Data file needs it only when the manifest says `requiresAccessToken`)."""
        attempt = 0
        delivered = skip
        while True:
            probe = await self.circuit.admit()
            try:  # the probe's slot is given back however the download ends (a consumer that stops, too)
                await self.rate.wait()
                async with self.in_flight:
                    sent = {"Accept": "application/fhir+ndjson",
                            **(await self.auth.headers(self.session) if authorized else {})}
                    timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.timeout,
                                                    sock_read=self.config.timeout)
                    async with self.session.get(url, headers=sent, timeout=timeout) as response:
                        if response.status == 200:
                            seen = 0
                            async for line in split_lines(response.content.iter_chunked(1 << 16)):
                                seen += 1
                                if seen > delivered:
                                    delivered += 1
                                    yield line
                            self.circuit.succeeded()
                            return
                        status, wait = response.status, retry_after(response.headers.get("Retry-After"))
                        if status == 401 and self.auth.renewable:
                            self.auth.renew()
                if status not in _RETRIED and status != 401:
                    self.circuit.succeeded()
                    raise UpstreamError(f"GET {url} answered {status}", status)
                if status not in (401, 429):  # as for any request: neither is the upstream failing
                    self.circuit.failed()
                problem = f"GET {url} answered {status}"
            except KeyProblem:  # Hearth's own key: no upstream failure, nothing to retry
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, AuthError) as error:
                self.circuit.failed()
                problem, wait, status = f"GET {url}: {type(error).__name__} {error}", None, None
            finally:
                self.circuit.release(probe)
            attempt = await self.again(problem, status, attempt, wait)


TOO_LONG = b"<an NDJSON line longer than 64 MiB, skipped>"  # not JSON: it becomes a malformed dead letter
_MAX_LINE = 64 * 1024 * 1024


async def split_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The non-empty lines of a byte stream, however long (aiohttp's own line reader stops at 128 KiB: a
    DocumentReference with an attachment is longer); a line past 64 MiB is given as TOO_LONG, not held."""
    buffer = bytearray()
    skipping = False
    async for chunk in chunks:
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end]).strip()
            del buffer[:end + 1]
            if skipping:
                skipping = False
                yield TOO_LONG
            elif line:
                yield line
        if len(buffer) > _MAX_LINE:
            buffer.clear()
            skipping = True
    line = bytes(buffer).strip()
    if skipping:
        yield TOO_LONG
    elif line:
        yield line


def backoff(attempt: int) -> float:
    """Seconds before retry `attempt` (1, 2, …): full jitter over an exponentially growing cap."""
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (attempt - 1)))


def retry_after(value: str | None) -> float | None:
    """A Retry-After header in seconds (delta seconds, or an HTTP date from now); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), _RETRY_AFTER_CAP)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, moment.timestamp() - time.time()), _RETRY_AFTER_CAP)


def _diagnostics(answer: Answer) -> str:
    try:
        body = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return answer.body[:200].decode("utf-8", "replace")
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return "; ".join(str(issue.get("diagnostics") or issue.get("code", "")) for issue in body.get("issue", []))
    return answer.body[:200].decode("utf-8", "replace")
