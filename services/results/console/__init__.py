"""The clinician console (served by the results service): patient list, patient
and check-in pages with plots, CSV and PDF exports, alert acknowledgement."""
