"""Results out to the EHR: FHIR R4 bundles (fhir.py) sent as CloudEvents to an SQS queue and/or an SNS
topic (publisher.py). Entry point: `EhrPublisher`."""

from services.results.ehr.publisher import EhrPublisher

__all__ = ["EhrPublisher"]
