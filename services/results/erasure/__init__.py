"""Erasure of a patient (handler.py says how): the erasure queue's handler, the erasures' records and
receipts (store.py), the queues an erasure reads through (queued.py) and the API's erasure routes
(api.py). Entry points: `ErasureHandler` (the erasure queue) and `router` (the API)."""

from services.results.erasure.handler import (
    CATEGORIES,
    ERASURE_QUEUE,
    ERASURE_REQUESTED,
    ErasureDeps,
    ErasureHandler,
    ErasureRequested,
    ResultsEraser,
    encode_erasure,
    erase,
)
from services.results.erasure.queued import MemoryQueuedMessages, QueuedMessages, SqsQueuedMessages, names_patient
from services.results.erasure.store import (
    DynamoErasures,
    ErasureStore,
    MemoryErasures,
    Receipt,
    new_erasure_id,
    receipt_of,
    wait_for_erasure,
)

__all__ = ["CATEGORIES", "ERASURE_QUEUE", "ERASURE_REQUESTED", "DynamoErasures", "ErasureDeps", "ErasureHandler",
           "ErasureRequested", "ErasureStore", "MemoryErasures", "MemoryQueuedMessages", "QueuedMessages", "Receipt",
           "ResultsEraser", "SqsQueuedMessages", "encode_erasure", "erase", "names_patient", "new_erasure_id",
           "receipt_of", "wait_for_erasure"]
