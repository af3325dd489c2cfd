"""What the results API's routes reach through FastAPI dependencies: the API's state (`ResultsApi`,
kept on `app.state.results_api` by `create_app`), the caller by role, and the page size.

Routes are top-level functions (app.py, admin.py, reviews.py, services/results/erasure/api.py) that
take `api: ResultsApi = Depends(api_of)` and one of `READER`, `ADMIN`, `REVIEWER` for the caller: the
role check (the only 403) runs before the route, the clinic scope and the audit record inside it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request

from services.results.dosing import DosingReviews
from services.results.erasure.store import ErasureStore
from shared.aws.history import HistoryReader
from shared.aws.jobs import JobStore
from shared.identity.audit import AuditTrail
from shared.identity.credentials import ApiKeyStore
from shared.identity.middleware import allow
from shared.identity.principal import Principal, Role

Enqueue = Callable[[str], Awaitable[str]]  # a message body -> its SQS id

# The largest page RESULTS_API_MAX_PAGE_SIZE may allow (its own bound in services/results/settings.py);
# the configured size, checked by `page_limit` and shown in the OpenAPI schema (app.py), is what a request
# may ask for.
PAGE_SIZE_CEILING = 1000
PAGE_LIMIT_DOC = "items on a page (the maximum is the service's RESULTS_API_MAX_PAGE_SIZE)"


@dataclass(frozen=True)
class ResultsApi:
    """The adapters and limits every route of the API reads, built once by `create_app`."""

    principal: Callable[[Request], Awaitable[Principal]]
    jobs: JobStore
    history: HistoryReader
    audit: AuditTrail
    api_keys: ApiKeyStore
    erasures: ErasureStore
    enqueue_erasure: Enqueue
    reviews: DosingReviews | None
    max_page_size: int
    erasure_wait_seconds: float

    def page_limit(self, limit: int) -> int:
        """`limit`, or 422 in the words of the API's other bounds when it is over the configured page size."""
        if limit > self.max_page_size:
            raise HTTPException(status_code=422, detail=f"limit: Input should be less than or equal to "
                                                        f"{self.max_page_size}")
        return limit

    def reviews_or_404(self) -> DosingReviews:
        if self.reviews is None:  # not mounted without reviews; a guard for a mis-composed app
            raise HTTPException(status_code=404, detail="dosing reviews are not served here")
        return self.reviews


def api_of(request: Request) -> ResultsApi:
    return request.app.state.results_api


async def caller(request: Request, api: ResultsApi = Depends(api_of)) -> Principal:
    """Who is calling (what the authentication middleware found; 401 without a valid credential)."""
    return await api.principal(request)


READERS = (Role.CLINICIAN, Role.CLINIC_ADMIN, Role.EHR_INTEGRATION)
READER = allow(caller, *READERS)
ADMIN = allow(caller, Role.CLINIC_ADMIN)
REVIEWER = allow(caller, Role.CLINICIAN, Role.CLINIC_ADMIN)
