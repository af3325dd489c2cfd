"""Why a credential was not accepted: the reason is for the log, never for the caller."""

from __future__ import annotations


class AuthenticationFailed(Exception):
    """The credential is missing or not valid; the reason is for the log only."""


class SessionEnded(AuthenticationFailed):
    """A browser session that is over: `why` is idle, expired or revoked (the sign-in page says so)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"session ended: {why}")
        self.why = why



class AuthenticationUnavailable(Exception):
    """The credential could not be checked (the key store or the JWKS endpoint is down)."""

