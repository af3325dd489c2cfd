"""Alerts for clinicians: per-clinic rules, alert records with their evidence,
delivery to a webhook or SNS through the alerts queue, acknowledgement."""
