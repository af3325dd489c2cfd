"""What the patient is asked to do in a check-in: the clinic's prompts and the
observed-dosing steps.

A clinic may replace either list and the recording limit in the clinics file
(`ScriptCatalog.from_file`); anything it does not set keeps the seed system's
defaults below. The same file carries other sections (time zone, alert rules)
read by the results service; this module reads only `checkin`.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import ConfigurationError


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_]{1,40}$")
    text: str = Field(min_length=1, max_length=300)
    hint: str | None = Field(None, max_length=300)


# The seed system's five guided questions.
DEFAULT_PROMPTS = (
    Step(id="mood", text="How has your mood been since your last check-in?",
         hint="Say it in your own words; there are no wrong answers."),
    Step(id="medication", text="Did you take your medication as prescribed, or did you miss any doses?"),
    Step(id="side_effects", text="Have you noticed any side effects?",
         hint="For example feeling restless, sleepy, stiff or dizzy."),
    Step(id="sleep", text="How have you been sleeping?"),
    Step(id="anything_else", text="Is there anything else you would like your care team to know?"),
)

# The observed-dosing protocol the vision stage looks for, in its order.
DEFAULT_DOSING_STEPS = (
    Step(id="show_pill", text="Hold your pill up to the camera.", hint="Keep it near your face, in the light."),
    Step(id="place_on_tongue", text="Place the pill on your tongue.", hint="Open your mouth so the camera sees it."),
    Step(id="close_mouth", text="Close your mouth and swallow.", hint="Take a sip of water if you need to."),
    Step(id="show_empty", text="Open your mouth to show it is empty."),
)


class CheckinScript(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompts: tuple[Step, ...] = Field(DEFAULT_PROMPTS, min_length=1, max_length=20)
    dosing_steps: tuple[Step, ...] = Field(DEFAULT_DOSING_STEPS, max_length=10)
    max_seconds: int = Field(300, ge=10, le=900, description="the recording stops by itself after this long")
    min_seconds: int = Field(5, ge=1, le=60)


class _ClinicEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    checkin: CheckinScript = CheckinScript()


class _ClinicsFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    default: _ClinicEntry = _ClinicEntry()
    clinics: dict[str, _ClinicEntry] = {}


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
        try:
            parsed = _ClinicsFile.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            raise ConfigurationError(f"the clinics file {path} cannot be used: {error}",
                                     "SCHIZODOT_CLINICS_FILE") from error
        return cls(parsed.default.checkin, {cid: entry.checkin for cid, entry in parsed.clinics.items()})

    def for_clinic(self, clinic_id: str | None) -> CheckinScript:
        return self._clinics.get(clinic_id or "", self.default)
