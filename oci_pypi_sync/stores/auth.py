"""Registry authentication as an auth flow (:class:`~.http.Auth`): basic, and bearer per scope.

The flow follows the distribution token spec: a request is answered 401
with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``; we fetch a
token from the realm (basic credentials, or an OAuth2 refresh-token POST for
an identity token) and retry once. Tokens are cached per scope so a later
request for the same repository and actions carries its token up front: the
store opens every upload session with a body-less POST, which settles the
push token before a large body is streamed. A streamed body is never sent
twice; its 401 goes back to the caller.

Credentials and tokens stay with their origin, as in Docker and pip: they
are attached only to requests for the registry's own scheme, host and port
(the ``base_url`` the flow is made for), and basic credentials go to the
token service that the registry names (its realm), never in clear text when
the registry itself is spoken to over HTTPS. A request to any other origin
(object storage that an upload ``Location`` names, say) goes out as it is,
and its 401 is not answered.

The challenge parsing and scope derivation are pure functions, and the
flow itself is a generator that does no I/O: it yields the requests to
send and is sent their responses (:class:`~oci_pypi_sync.stores.http.HttpClient`
drives it).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from yarl import URL

from oci_pypi_sync.errors import AuthenticationError
from oci_pypi_sync.limits import loads_json
from oci_pypi_sync.stores.credentials import Credentials, CredentialStore
from oci_pypi_sync.stores.http import Request, Response

__all__ = [
    "Challenge",
    "RegistryAuth",
    "merge_scopes",
    "normalize_scope",
    "parse_challenges",
    "request_scopes",
]

#: Token lifetime assumed when the token service does not say (the spec's default).
DEFAULT_TOKEN_SECONDS = 60
#: Tokens are dropped this long before they expire, so a long upload does not start on one.
EXPIRY_MARGIN_SECONDS = 10
CLIENT_ID = "oci-pypi-sync"

_PULL_METHODS = frozenset({"GET", "HEAD"})


# --- pure parts -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: the scheme (lower case) and its parameters."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        """The scopes the challenge names (space separated in one parameter)."""
        return tuple(self.params.get("scope", "").split())

    @property
    def error(self) -> str | None:
        return self.params.get("error")


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME_RE = re.compile(rf"\s*({_TOKEN})(?=\s|$|,)")
_PARAM_RE = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*')


def parse_challenges(headers: str | Iterable[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` values (RFC 9110 syntax) into challenges.

    Accepts one header value or several; a value may hold several
    challenges. Unparseable trailing text is ignored rather than fatal,
    since the worst outcome is a 401 reported to the user.
    """
    values = [headers] if isinstance(headers, str) else list(headers)
    challenges: list[Challenge] = []
    for value in values:
        pos = 0
        while pos < len(value):
            while pos < len(value) and value[pos] in " ,\t":
                pos += 1
            scheme = _SCHEME_RE.match(value, pos)
            if scheme is None:
                break
            pos = scheme.end()
            params: dict[str, str] = {}
            while True:
                param = _PARAM_RE.match(value, pos)
                if param is None:
                    break
                quoted, bare = param.group(2), param.group(3)
                text = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
                params[param.group(1).lower()] = text
                pos = param.end()
                if pos < len(value) and value[pos] == ",":
                    pos += 1
                    continue
                break
            challenges.append(Challenge(scheme.group(1).lower(), params))
    return challenges


_REPO_PATH_RE = re.compile(
    r"^/v2/(?P<name>.+)/(?:blobs/uploads(?:/.*)?|blobs/[^/]+|manifests/[^/]+|tags/list|referrers/[^/]+)$"
)


def request_scopes(method: str, path: str, query: Mapping[str, str]) -> tuple[str, ...]:
    """The token scopes a registry request needs.

    ``repository:<name>:pull`` for reads, ``repository:<name>:pull,push`` for
    writes, plus ``repository:<from>:pull`` for a cross-repository mount.
    Paths outside a repository (``/v2/``, ``_catalog``) need no repository scope.
    """
    match = _REPO_PATH_RE.match(path)
    if match is None:
        return ()
    name = match.group("name")
    actions = "pull" if method.upper() in _PULL_METHODS else "pull,push"
    scopes = [f"repository:{name}:{actions}"]
    source = query.get("from")
    if query.get("mount") and source and source != name:
        scopes.append(f"repository:{source}:pull")
    return tuple(scopes)


def normalize_scope(scope: str) -> str:
    """Sort a scope's actions (registries list them in any order): ``...:pull,push``."""
    head, sep, actions = scope.rpartition(":")
    if not sep or not head.count(":"):
        return scope
    return f"{head}:{','.join(sorted(set(actions.split(','))))}"


def merge_scopes(challenge: Challenge, derived: tuple[str, ...]) -> tuple[str, ...]:
    """The scopes to ask the token service for: the challenge's when it names any."""
    return challenge.scopes or derived


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: float


def parse_token_response(body: bytes, now: float) -> _Token | None:
    """Read ``token`` (or the OAuth2 ``access_token``) and ``expires_in``."""
    try:
        data = loads_json(body, "a token response")
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    value = data.get("token") or data.get("access_token")
    if not isinstance(value, str) or not value:
        return None
    lifetime = data.get("expires_in")
    seconds: float = DEFAULT_TOKEN_SECONDS
    if isinstance(lifetime, int | float) and lifetime > 0:
        seconds = lifetime
    return _Token(value, now + max(float(seconds) - EXPIRY_MARGIN_SECONDS, 1.0))


def basic_header(credentials: Credentials) -> str:
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


# --- the flow ---------------------------------------------------------------


class RegistryAuth:
    """Authenticates requests to one registry (basic or bearer per scope).

    ``host`` names the registry's credentials (``HOST[:PORT]``, as in the
    docker config); ``base_url`` is where the registry is spoken to
    (``https://HOST[:PORT]``), the one origin its credentials and tokens
    are sent to. One instance is shared by every request to the registry;
    the token cache is keyed by the scopes a request needs, so pull and
    push tokens (and tokens for different repositories) never stand in for
    one another.
    """

    def __init__(
        self,
        credentials: CredentialStore,
        host: str,
        *,
        base_url: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = credentials
        self._host = host
        base = URL(base_url)
        self._origin = (base.scheme, base.host or "", base.port)
        self._clock = clock
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._basic = False
        self._resolved = False
        self._credentials: Credentials | None = None

    def __repr__(self) -> str:
        return f"RegistryAuth(host={self._host!r})"

    @property
    def credentials(self) -> Credentials | None:
        """The credentials for the host, resolved once (a helper may run)."""
        if not self._resolved:
            self._credentials = self._store.get(self._host)
            self._resolved = True
        return self._credentials

    def cached_token(self, scopes: tuple[str, ...]) -> str | None:
        token = self._tokens.get(scopes)
        if token is None:
            return None
        if token.expires_at <= self._clock():
            del self._tokens[scopes]
            return None
        return token.value

    def flow(self, request: Request) -> Generator[Request, Response, None]:
        """Attach what is held; on a 401, get a token (or send basic) and send once more.

        A request whose body is a stream is not sent twice: its 401 is the
        caller's answer. A request to another origin than the registry's is
        sent as it is: nothing of the registry's goes there.
        """
        if request.origin != self._origin:
            yield request
            return
        scopes = self._authorize(request)
        response = yield request
        if response.status_code != 401 or not request.replayable:
            return
        if scopes is None:
            scopes = request_scopes(request.method, request.url.path, request.url.query)
        challenges = parse_challenges(response.headers.getall("WWW-Authenticate", ()))
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        credentials = self.credentials
        if bearer is not None:
            # An expired or too narrow token (``insufficient_scope``) is replaced once.
            token_request = self._token_request(bearer, merge_scopes(bearer, scopes), credentials)
            token_response = yield token_request
            token = self._accept_token(token_response, bearer)
            self._tokens[scopes] = token
            request.headers["Authorization"] = f"Bearer {token.value}"
            yield request
        elif basic is not None and credentials is not None and credentials.has_basic:
            if request.headers.get("Authorization", "").startswith("Basic "):
                return  # we sent them and they were refused
            self._basic = True
            request.headers["Authorization"] = basic_header(credentials)
            yield request

    def _authorize(self, request: Request) -> tuple[str, ...] | None:
        """Attach what we already hold, so a streamed body needs no round trip.

        Returns the request's scopes when they were worked out (only when a
        token or basic credentials are held: an anonymous registry that never
        challenged costs nothing here).
        """
        if "Authorization" in request.headers or not (self._tokens or self._basic):
            return None
        scopes = request_scopes(request.method, request.url.path, request.url.query)
        token = self.cached_token(scopes)
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
            return scopes
        credentials = self.credentials if self._basic else None
        if credentials is not None and credentials.has_basic:
            request.headers["Authorization"] = basic_header(credentials)
        return scopes

    def _token_request(
        self, challenge: Challenge, scopes: tuple[str, ...], credentials: Credentials | None
    ) -> Request:
        realm = challenge.realm or ""
        scheme = urlsplit(realm).scheme
        if scheme not in ("http", "https"):
            raise AuthenticationError(
                f"registry {self._host} sent a token realm that is not an http(s) URL"
            )
        has_secret = credentials is not None and (
            credentials.has_basic or bool(credentials.identity_token)
        )
        if has_secret and scheme == "http" and self._origin[0] == "https":
            raise AuthenticationError(
                f"registry {self._host} names a plain-HTTP token service "
                f"({urlsplit(realm).netloc}); its credentials are not sent there in clear text"
            )
        if credentials is not None and credentials.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": credentials.identity_token,
                "client_id": CLIENT_ID,
            }
            if challenge.service:
                form["service"] = challenge.service
            if scopes:
                form["scope"] = " ".join(scopes)
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            return Request.build("POST", realm, headers=headers, body=urlencode(form).encode())
        params: list[tuple[str, str]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        params.extend(("scope", scope) for scope in scopes)
        headers = {}
        if credentials is not None and credentials.has_basic:
            headers["Authorization"] = basic_header(credentials)
        return Request.build("GET", realm, params=params, headers=headers)

    def _accept_token(self, response: Response, challenge: Challenge) -> _Token:
        service = urlsplit(challenge.realm or "").netloc or "?"
        if response.status_code in (401, 403):
            who = "our credentials" if self.credentials is not None else "anonymous access"
            raise AuthenticationError(
                f"token service {service} for registry {self._host} refused {who} "
                f"(HTTP {response.status_code})",
                status=response.status_code,
                code="UNAUTHORIZED",
            )
        if response.status_code != 200:
            raise AuthenticationError(
                f"token service {service} for registry {self._host} answered "
                f"HTTP {response.status_code}",
                status=response.status_code,
            )
        token = parse_token_response(response.content, self._clock())
        if token is None:
            raise AuthenticationError(
                f"token service {service} for registry {self._host} sent no token"
            )
        return token
