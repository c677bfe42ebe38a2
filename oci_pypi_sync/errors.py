"""Exceptions, one per thing that can be at fault, each with a message fit for a user."""

from __future__ import annotations

from oci_pypi_sync.redact import redact_text


class OciPypiError(Exception):
    """Base class: the message names the thing at fault and is safe to print.

    Every URL in the message is redacted on the way in (user-info, tokens,
    signatures), so an error can be printed, logged or stored as it is.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact_text(arg) if isinstance(arg, str) else arg for arg in args))


class UsageError(OciPypiError):
    """The user's input (a requirement, a target, an option) is not valid."""


# --- the index side -------------------------------------------------------


class IndexError_(OciPypiError):  # noqa: N801, N818
    """The package index could not be read or answered something unusable.

    ``status`` is the HTTP status when the index answered, ``retry_after``
    the seconds its ``Retry-After`` header asked for.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class IndexUnreachableError(IndexError_):
    """The index could not be reached at all (DNS, connection, TLS)."""


class FileHostUnreachableError(IndexError_):
    """A host the index sends a file to (not the index itself) could not be reached.

    Only the files kept there fail; the index, and the files it keeps
    elsewhere, may still be read.
    """


class UnsupportedUrlError(IndexError_):
    """The index names a URL this tool does not fetch (``file:``, ``ftp:``...)."""


class ProjectNotFoundError(IndexError_):
    """The index has no page for the project."""

    def __init__(self, project: str, url: str) -> None:
        super().__init__(f"project {project!r} not found on the index ({url})")
        self.project = project
        self.url = url


class StalePageError(IndexError_):
    """A project page older than the project list promised: a cache served an old copy.

    Transient: the cache catches up, so the page is fetched again.
    """


class UnsupportedApiVersionError(IndexError_):
    """The page declares a simple-API major version this tool cannot read."""


class InvalidPageError(IndexError_):
    """The page could not be parsed as PEP 503 HTML or PEP 691 JSON."""


# --- integrity -----------------------------------------------------------


class DigestMismatchError(OciPypiError):
    """Bytes received do not have the digest that was advertised for them."""

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(f"digest mismatch for {what}: expected {expected}, got {actual}")
        self.what = what
        self.expected = expected
        self.actual = actual


class SizeMismatchError(OciPypiError):
    """Bytes received do not have the size that was advertised for them."""

    def __init__(self, what: str, expected: int, actual: int) -> None:
        super().__init__(f"size mismatch for {what}: expected {expected} bytes, got {actual}")
        self.what = what
        self.expected = expected
        self.actual = actual


# --- the OCI side ----------------------------------------------------------


class TargetError(OciPypiError):
    """A target (registry or layout) is invalid, unreachable or refused a write."""


class RegistryError(TargetError):
    """A registry answered with an error.

    ``status`` is the HTTP status, ``code`` the first OCI error code when the
    registry sent one. Messages never carry credentials.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class RegistryUnreachableError(RegistryError):
    """The registry could not be reached at all (DNS, connection, TLS)."""


class AuthenticationError(RegistryError):
    """The registry refused our credentials, or we had none and it wants some."""


class TargetRefusedError(RegistryError):
    """The registry refused a push for a reason every push to it shares: a setting to change.

    Like an unreachable registry it stops a run: nothing else could succeed
    until someone creates the repository or changes the registry's settings.
    """


class InsecureLocationError(TargetRefusedError):
    """A registry spoken to over HTTPS named a plain-HTTP address of its own host.

    Following it would send the credentials and the data in clear text. The
    usual cause is a TLS proxy in front of the registry that does not tell
    it the original scheme (``X-Forwarded-Proto``): a setting to change.
    """


class RepositoryMissingError(TargetRefusedError):
    """The repository does not exist and the registry does not create repositories on push."""


class LayoutError(TargetError):
    """An OCI image layout on disk is missing, malformed or not writable."""


class TargetWriteError(TargetError):
    """The target refuses every write: its disk is full, it is read-only, or not ours to write."""


# --- bounds ------------------------------------------------------------------


class LimitExceededError(OciPypiError):
    """An input is bigger, deeper or longer than the bound it is read with.

    The bounds are the constants of :mod:`oci_pypi_sync.limits`; the message
    names the one exceeded. Trying again would not help.
    """


class IndexLimitError(IndexError_, LimitExceededError):
    """A page, a file's metadata or a wheel from the index exceeds a bound."""


class RegistryLimitError(RegistryError, LimitExceededError):
    """A manifest, a listing or a token from a registry exceeds a bound."""


class LayoutLimitError(LayoutError, LimitExceededError):
    """A manifest or index in a layout or a packed layout exceeds a bound."""


# --- the state file --------------------------------------------------------


class JournalError(OciPypiError):
    """The state file is unreadable, corrupt, of a newer schema or for another target.

    Deleting the state file is always safe: the target holds the truth.
    """


class JournalLockedError(OciPypiError):
    """Another sync holds the state file's lock; deleting the file would not help."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import time

    return max(0.0, when.timestamp() - time.time())


# --- provenance ------------------------------------------------------------


class ProvenanceError(OciPypiError):
    """A file's PEP 740 provenance is unreadable, does not verify, or is not trusted."""


class BudgetExceededError(OciPypiError):
    """The run would transfer more than ``--max-bytes`` allows: nothing was transferred."""


# --- what stops a run -----------------------------------------------------------

#: Errors after which nothing else could succeed: the target cannot be reached,
#: refuses our credentials, refuses pushes (a registry setting) or writes (a full
#: disk), the index itself is down, or the run is over its ``--max-bytes``.
#: Any other error fails one file or one project, and the run goes on.
FATAL_ERRORS: tuple[type[OciPypiError], ...] = (
    RegistryUnreachableError,
    AuthenticationError,
    TargetRefusedError,
    IndexUnreachableError,
    TargetWriteError,
    BudgetExceededError,
)


def is_fatal(exc: BaseException) -> bool:
    """Whether ``exc`` stops the whole run (see :data:`FATAL_ERRORS`)."""
    return isinstance(exc, FATAL_ERRORS)


def unexpected_error(exc: BaseException) -> str:
    """A one-line message for an error no rule foresaw (the traceback goes to the -vv log).

    Its text is not ours: any URL in it is redacted.
    """
    detail = redact_text(str(exc).splitlines()[0]) if str(exc) else ""
    return (
        f"unexpected {type(exc).__name__}"
        + (f": {detail}" if detail else "")
        + (" (rerun with -vv for the traceback, and please report it)")
    )


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a failed task group: a fatal one if any, else the first."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    for leaf in leaves:
        if isinstance(leaf, FATAL_ERRORS):
            return leaf
    return leaves[0]
