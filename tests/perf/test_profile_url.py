"""manage.py profile_url: one request under cProfile, the top functions printed."""

from __future__ import annotations

import io
import pstats

import pytest
from django.core.management import CommandError, call_command


@pytest.mark.django_db
def test_profiles_an_api_request_as_the_user(make_user, make_project, tmp_path) -> None:
    owner = make_user("alice-prof")
    make_project(owner, name="Profiled")
    out = io.StringIO()
    raw = tmp_path / "run.prof"
    call_command("profile_url", "/api/v1/projects", user="alice-prof", limit=15, output=str(raw), stdout=out)
    text = out.getvalue()

    first = text.splitlines()[0]
    assert first.startswith("GET /api/v1/projects -> 200, ")
    assert "queries" in first
    assert "ncalls" in text and "cumtime" in text
    # The profile reaches into the project's own code: the view calls the selector.
    stats = pstats.Stats(str(raw))
    functions = {name for (_, _, name) in stats.stats}
    assert "projects_for_user" in functions
    # Printed rows are bounded by --limit.
    assert "due to restriction <15>" in text


@pytest.mark.django_db
def test_anonymous_request_shows_the_redirect(make_user) -> None:
    out = io.StringIO()
    call_command("profile_url", "/", sort="tottime", limit=5, warmup=0, stdout=out)
    assert out.getvalue().splitlines()[0].startswith("GET / -> 302, ")


@pytest.mark.django_db
def test_unknown_user_is_an_error() -> None:
    with pytest.raises(CommandError, match="No user named 'nobody-here'"):
        call_command("profile_url", "/", user="nobody-here", stdout=io.StringIO())
