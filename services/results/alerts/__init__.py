"""Alerts for clinicians: per-clinic rules, alert records with their evidence,
delivery to a webhook or SNS through the alerts queue, acknowledgement.

The rest of the results service uses alerts through these names only: the service
that raises and sweeps alerts (`AlertService`, with `earlier_results`: what its rules read of the
patient's history), the stores the console reads
(`AlertStore`, `Roster`), the alerts queue's handler (`AlertsHandler`), and the
adapters the composition root builds (services/results/main.py)."""

from services.results.alerts.delivery import AlertsHandler, DeliveryDeps, RetryPolicy
from services.results.alerts.roster import DynamoRoster, InMemoryRoster, Roster, RosterEntry
from services.results.alerts.rules import ALERT_HISTORY_ATTRIBUTES, earlier_of, earlier_results, read_alert_history
from services.results.alerts.service import AlertService, SqsAlertQueue
from services.results.alerts.store import (
    NOTE_MAX,
    Alert,
    AlertStore,
    AlreadyAcknowledged,
    DynamoAlertStore,
    InMemoryAlertStore,
)

__all__ = ["ALERT_HISTORY_ATTRIBUTES", "NOTE_MAX", "Alert", "AlertService", "AlertStore", "AlertsHandler", "AlreadyAcknowledged", "DeliveryDeps",
           "DynamoAlertStore", "DynamoRoster", "InMemoryAlertStore", "InMemoryRoster", "RetryPolicy", "Roster",
           "RosterEntry", "SqsAlertQueue", "earlier_of", "earlier_results", "read_alert_history"]
