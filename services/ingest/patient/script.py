"""What the patient is asked to do in a check-in: the clinic's prompts and the
observed-dosing steps.

A clinic may replace either list and the recording limit in the `checkin` section
of the clinics file (its schema, with the seed system's defaults, is
`shared.domain.clinics`); anything it does not set keeps the defaults.
"""

from __future__ import annotations

from pathlib import Path

from shared.domain.clinics import DEFAULT_DOSING_STEPS, DEFAULT_PROMPTS, CheckinScript, Step, read_clinics_file

__all__ = ["DEFAULT_DOSING_STEPS", "DEFAULT_PROMPTS", "CheckinScript", "ScriptCatalog", "Step"]


class ScriptCatalog:
    """Each clinic's check-in script; clinics without their own get the default."""

    def __init__(self, default: CheckinScript | None = None, clinics: dict[str, CheckinScript] | None = None) -> None:
        self.default = default or CheckinScript()
        self._clinics = dict(clinics or {})

    @classmethod
    def from_file(cls, path: Path) -> "ScriptCatalog":
        """Read the clinics file (JSON: {"default": {"checkin": ...}, "clinics": {id: {"checkin": ...}}}).

        A malformed file raises ConfigurationError naming the problem and the setting,
        so the service refuses to start rather than showing patients the wrong questions.
        """
        parsed = read_clinics_file(path)
        return cls(parsed.default.checkin, {cid: entry.checkin for cid, entry in parsed.clinics.items()})

    def for_clinic(self, clinic_id: str | None) -> CheckinScript:
        return self._clinics.get(clinic_id or "", self.default)
