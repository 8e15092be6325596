"""Domain failures the API turns into RFC 9457 problems."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class FieldError:
    field: str
    message: str


class DomainError(Exception):
    status = 400
    title = "Bad Request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ValidationFailed(DomainError):
    status = 400
    title = "Validation failed"

    def __init__(self, errors: list[FieldError], detail: str | None = None) -> None:
        self.errors = errors
        if detail is None:
            first = errors[0] if errors else None
            detail = (
                f"{len(errors)} invalid field(s); first: {first.field}: {first.message}"
                if first
                else "invalid request"
            )
        super().__init__(detail)


class NotFound(DomainError):
    status = 404
    title = "Not Found"


class LimitReached(DomainError):
    """A quota of the contract (the message names the limit)."""

    status = 429
    title = "Too Many Requests"


class Conflict(DomainError):
    status = 409
    title = "Conflict"
