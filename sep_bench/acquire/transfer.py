"""Bounds on every request to a remote service, and network failures as one-line errors a user can act on.

`Policy` holds the limits of one `sep-bench data get` run (defaults generous, each overridable by an environment
variable ``SEP_BENCH_<FIELD>``, e.g. ``SEP_BENCH_MIN_RATE``, and the main ones by command options):

- a minimum transfer rate per request: fewer than ``min_rate`` bytes/s over a ``rate_window`` (1 KB/s over 60 s
  by default) ends the request as interrupted, and the download resumes (`RateWatch`); ``timeout`` bounds the
  wait for any one read;
- an optional overall ``deadline`` (seconds, 0 = none) for the whole run;
- caps on redirects per request (``max_redirects``), listing pages and entries, and the size of a JSON answer.

`network_error` turns a ``requests`` exception into a `NetworkError` naming the URL's host, what happened and
what to try; `check_redirect` allows ``http``/``https`` redirect targets only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields
from urllib.parse import urljoin, urlsplit

import requests

from sep_bench.acquire.catalog import AcquireError

__all__ = ["Policy", "RateWatch", "NetworkError", "TooSlow", "Interrupted", "body_chunks", "network_error", "describe",
           "check_redirect", "host_of", "ALLOWED_SCHEMES"]

ALLOWED_SCHEMES = ("http", "https")


class NetworkError(AcquireError):
    """A remote service could not be reached or misbehaved at the HTTP level (not a problem of the bytes)."""


class Interrupted(Exception):
    """The connection broke (or closed early) in the middle of a body: the transfer can be resumed."""


class TooSlow(Interrupted):
    """A transfer fell below the minimum rate: treated as an interrupted transfer (resumed)."""


def body_chunks(r: requests.Response, size: int = 1 << 20):
    """The body of a streamed response as it arrives (each read returns what the socket has, up to `size`), so
    a `RateWatch` sees every byte when it comes; protocol errors mid-body raise `Interrupted`."""
    read1 = getattr(r.raw, "read1", None)
    if read1 is None:  # not a urllib3 response (a test double): no partial reads
        yield from r.iter_content(size)
        return
    encoded = r.headers.get("Content-Encoding", "identity") not in ("identity", "")
    try:
        while True:
            chunk = read1(size, decode_content=encoded)
            if not chunk:  # urllib3 reads on until a decoder yields something: empty means the end
                return
            yield chunk
    except Exception as err:  # urllib3's protocol and timeout errors: a broken transfer
        raise Interrupted(str(err) or type(err).__name__) from None


def host_of(url: str) -> str:
    """``host[:port]`` of a URL, lower case: the scope of a credential, and what error messages name."""
    u = urlsplit(url)
    host = (u.hostname or "").lower()
    default = {"http": 80, "https": 443}.get(u.scheme)
    return host if u.port in (None, default) else f"{host}:{u.port}"


@dataclass
class Policy:
    """Limits of one acquisition run (see the module docstring)."""

    timeout: float = 60.0  # seconds to wait for a connection or for any one read
    min_rate: float = 1000.0  # bytes per second (1 KB/s), averaged over rate_window ...
    rate_window: float = 60.0  # ... seconds; 0 disables the check
    deadline: float = 0.0  # seconds for the whole run; 0 = no deadline
    max_redirects: int = 10
    max_listing_pages: int = 10_000
    max_listing_entries: int = 1_000_000
    max_json_bytes: int = 256 << 20
    started: float = field(default_factory=time.monotonic, compare=False)

    @classmethod
    def from_env(cls, **overrides) -> "Policy":
        """Defaults, then ``SEP_BENCH_<FIELD>`` environment variables, then `overrides` that are not None."""
        values = {}
        for f in fields(cls):
            if f.name == "started":
                continue
            raw = os.environ.get(f"SEP_BENCH_{f.name.upper()}")
            if raw is not None:
                try:
                    values[f.name] = int(float(raw)) if f.type == "int" else float(raw)
                except ValueError:
                    raise AcquireError(f"SEP_BENCH_{f.name.upper()}={raw!r} is not a number") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        if not self.deadline:
            return None
        return self.deadline - (time.monotonic() - self.started)

    def check_deadline(self, what: str, url: str) -> None:
        left = self.remaining()
        if left is not None and left <= 0:
            raise NetworkError(f"{what}: the run's deadline of {self.deadline:.0f} s passed while talking to "
                               f"{host_of(url)}; what was downloaded is kept: run the command again to resume "
                               "(raise the limit with --deadline, 0 for none)")

    def request_timeout(self) -> float:
        left = self.remaining()
        return self.timeout if left is None else max(0.1, min(self.timeout, left))

    def watch(self, what: str, url: str) -> "RateWatch":
        return RateWatch(self, what, url)


class RateWatch:
    """Counts the bytes of one request; raises `TooSlow` when a window ends below the minimum rate, and
    `NetworkError` past the deadline."""

    def __init__(self, policy: Policy, what: str, url: str):
        self.policy, self.what, self.url = policy, what, url
        self.window_start = time.monotonic()
        self.window_bytes = 0

    def feed(self, n: int) -> None:
        self.window_bytes += n
        self.policy.check_deadline(self.what, self.url)
        p = self.policy
        if p.rate_window <= 0:
            return
        now = time.monotonic()
        if now - self.window_start >= p.rate_window:
            rate = self.window_bytes / (now - self.window_start)
            if rate < p.min_rate:
                raise TooSlow(f"{host_of(self.url)} sent {rate:.0f} bytes/s over {now - self.window_start:.0f} s, "
                              f"below the minimum of {p.min_rate:.0f} bytes/s")
            self.window_start, self.window_bytes = now, 0


def check_redirect(response: requests.Response, target: str | None, policy: Policy) -> str | None:
    """`target` (made absolute) when its scheme is http or https; else `NetworkError` naming both ends."""
    if target is None:
        return None
    absolute = urljoin(response.url, target)
    scheme = urlsplit(absolute).scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise NetworkError(f"{host_of(response.url)} redirected to a {scheme or 'scheme-less'}: URL "
                           f"({absolute[:120]!r}); "
                           "only http and https redirects are followed: the service (or --endpoint) is not one "
                           "sep-bench can trust for this download")
    return target


def describe(err: BaseException, policy: Policy) -> tuple[str, str]:
    """(what happened, what to try) for a requests exception."""
    retry = "check the network (proxy, VPN, firewall) and the service's status, then run the command again"
    if isinstance(err, requests.TooManyRedirects):
        return (f"more than {policy.max_redirects} redirects (a redirect loop)",
                "the service or --endpoint is misconfigured: try again later or use another source")
    if isinstance(err, (requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidURL)):
        return "an unusable URL", "check --endpoint (an http(s) URL) or the source's catalog entry"
    if isinstance(err, requests.exceptions.SSLError):
        return "a TLS/certificate error", "check the system's certificates or the proxy, then run again"
    if isinstance(err, requests.ConnectTimeout):
        return f"no connection within {policy.timeout:.0f} s", retry
    if isinstance(err, requests.ReadTimeout):
        return f"no data for {policy.timeout:.0f} s", retry
    if isinstance(err, TooSlow):
        return str(err), retry + " (or lower --min-rate)"
    if isinstance(err, Interrupted):
        return f"the transfer broke off ({err})", retry
    if isinstance(err, requests.ConnectionError):
        return "the connection failed or was cut", retry
    if isinstance(err, requests.exceptions.ChunkedEncodingError):
        return "the connection broke mid-transfer", retry
    return type(err).__name__, retry


def network_error(err: BaseException, url: str, what: str, policy: Policy, tail: str = "") -> NetworkError:
    """A one-line `NetworkError` for `err` met while fetching `url`: host, what happened, what to try."""
    happened, fix = describe(err, policy)
    return NetworkError(f"{what}: network error talking to {host_of(url)}: {happened}{tail}; {fix}")
