"""The clinic's check-in script (prompts and observed-dosing steps) is defined in
`shared/checkin_script.py`: the results service's console shows the same questions
beside the answers' markers. Imported here under its old name."""

from shared.checkin_script import DEFAULT_DOSING_STEPS, DEFAULT_PROMPTS, CheckinScript, ScriptCatalog, Step

__all__ = ["DEFAULT_DOSING_STEPS", "DEFAULT_PROMPTS", "CheckinScript", "ScriptCatalog", "Step"]
