"""Finding 4 of issue 19: the pseudonym key. A published development key is refused outside
the embedded stack (patient references made with it could be reversed by guessing ids); the
embedded stack keeps its keys beside its stored data, 0600, so `patient_ref`s stay comparable
across `make up`; the console's CSRF key is a secret of its own."""

from __future__ import annotations

import stat

import pytest

from schizodot import stack
from shared.domain.errors import ConfigurationError
from shared.identity.access import build_access
from shared.settings import CommonSettings


class _NoAws:
    dynamodb = s3 = None


def test_pseudonym_key_published_development_key_is_refused_outside_the_embedded_stack():
    with pytest.raises(ConfigurationError, match="published development key"):
        build_access(CommonSettings(pseudonym_key="local-development-only"), _NoAws(), service="schizodot-results")
    build_access(CommonSettings(pseudonym_key="local-development-only", embedded_stack=True), _NoAws(),
                 service="schizodot-results")
    build_access(CommonSettings(pseudonym_key="a-secret-of-this-deployment-0123"), _NoAws(), service="x")


def test_pseudonym_key_of_the_embedded_stack_survives_up(tmp_path):
    data = tmp_path / "data"
    first = stack.StackConfig(state_dir=tmp_path / "state", data_dir=data)
    stack.load_stack_secrets(first)
    again = stack.StackConfig(state_dir=tmp_path / "state", data_dir=data)  # the next `make up`
    assert again.pseudonym_key != first.pseudonym_key  # made fresh ...
    stack.load_stack_secrets(again)
    assert (again.pseudonym_key, again.console_csrf_key) == (first.pseudonym_key, first.console_csrf_key)  # ... kept
    assert again.console_csrf_key != again.pseudonym_key
    saved = data / stack.SECRETS_FILE
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert again.service_environment("results")["SCHIZODOT_PSEUDONYM_KEY"] == first.pseudonym_key
    assert again.service_environment("results")["RESULTS_CONSOLE_CSRF_KEY"] == first.console_csrf_key
    assert again.environment()["SCHIZODOT_EMBEDDED_STACK"] == "true"


def test_pseudonym_key_is_not_the_console_csrf_key(monkeypatch):
    """The results worker refuses to serve the cookie sign-in without a CSRF key of its own."""
    from services.results import main
    from services.results.settings import ResultsSettings
    from shared.identity.tokens import AuthSettings

    monkeypatch.setenv("SCHIZODOT_PSEUDONYM_KEY", "a-secret-of-this-deployment-0123")
    settings = ResultsSettings(auth=AuthSettings(session_cookie="schizodot_session", cookie_paths=("/console",)))

    class App:  # the part of main.ResultsApp the console is built from
        common = CommonSettings()
        aws = _NoAws()

    App.settings = settings
    App.access = build_access(App.common, App.aws, service="schizodot-results", auth=settings.auth)
    with pytest.raises(ConfigurationError, match="RESULTS_CONSOLE_CSRF_KEY"):
        main._console(App())
