"""Errors are values a person can act on.

`InputError` means the check-in itself cannot be analysed (wrong file type, a
truncated video, ...): retrying will not help, so the job fails at once with the
message, which must be written for a person ("the file is not a video: it is a
JPEG image"). Any other exception is treated as transient and retried; after the
last attempt the job fails with a summary of it.
"""


class InputError(Exception):
    """The input cannot be analysed; the message is shown to people as the job's error."""


class MalformedMessage(Exception):
    """A queue message that is not a valid event for its queue; it is dead-lettered as is."""

    trace_carrier: dict[str, str] = {}  # the sender's trace context, when its envelope could be read


class ConfigurationError(RuntimeError):
    """The service cannot start as configured; the message names the setting to fix."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


class ModelUnavailable(ConfigurationError):
    """A configured model cannot be loaded; raised at start-up and names the setting to fix."""

    def __init__(self, setting: str, path: object, reason: str) -> None:
        super().__init__(f"{reason}: {path} (set {setting} to a valid model file)", setting)


class InvalidStoredResult(Exception):
    """A SchizodotUsers item read back that is not a `ResultItem`: our data, not the caller's input, so
    it is a server error naming the job and each wrong field (shared.domain.stored_results.stored_result)."""
