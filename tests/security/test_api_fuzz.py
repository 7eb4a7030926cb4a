"""Schemathesis against /api/v1/openapi.json: no input makes a 500, every documented answer matches its schema.

The API runs in-process through Django's WSGI handler (the same view code as
under the real server) with a bearer token of a project member. Each operation runs
twice: once with the path parameters schemathesis generates (mostly ids and
slugs that do not exist, or are hostile: huge numbers, odd characters) and once
with the path parameters pinned to the seeded project, its public room and a
message of the member's own, so bodies and query strings are fuzzed against
real objects and the success answers are checked against their schemas too. Examples are bounded
(``MAX_EXAMPLES`` per operation and variant).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from chat.models import ApiToken
from chat.services import accounts as account_services
from chat.services import messages as message_services
from projects import services as project_services
from projects.models import Invitation, Project
from tests.security.conftest import World

MAX_EXAMPLES = 20

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())


@pytest.fixture
def in_test_transaction() -> Iterator[None]:
    """Keep the WSGI handler inside the test's transaction, as Django's test client does.

    The handler closes "old" connections at the start and end of each request;
    inside a test transaction that would close the test's own connection.
    """
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def _pin_to_world(case, world: World) -> None:
    # The member's own message, so edits and deletes can succeed too.
    own, _ = message_services.message_create(room=world.public, author=world.user("member"), body="mine", client_id="own")
    real = {
        "slug": world.project.slug,
        "room_id": world.public.id,
        "message_id": own.id,
        # A spare token of the member's own (revoking it leaves the one the requests use); one
        # at a time, so the token list stays the size of the others.
        "token_id": (
            ApiToken.objects.filter(user=world.user("member"), name="spare").first()
            or account_services.token_create(user=world.user("member"), name="spare")[0]
        ).id,
    }
    for name in list(case.path_parameters or {}):
        if name in real:
            case.path_parameters[name] = real[name]


@pytest.mark.django_db
@pytest.mark.parametrize("paths", ["generated", "seeded"])
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_api_has_no_server_errors_and_matches_its_schema(case, paths: str, world: World, in_test_transaction) -> None:
    if paths == "seeded":
        _pin_to_world(case, world)
        _pin_membership_paths(case, world)
    case.call_and_validate(
        headers={"Authorization": f"Bearer {world.tokens['member']}"},
        checks=[not_a_server_error, response_schema_conformance],
    )


def _pin_membership_paths(case, world: World) -> None:
    """An invitation of the member's own (to another project), and the member's own id (removing oneself is leaving)."""
    other = Project.objects.filter(slug="fuzz-other").first() or project_services.project_create(
        user=world.user("admin"), name="Fuzz other", slug="fuzz-other"
    )
    invitation, _ = Invitation.objects.get_or_create(project=other, user=world.user("member"))
    real = {"invitation_id": invitation.id, "user_id": world.user("member").id}
    for name in list(case.path_parameters or {}):
        if name in real:
            case.path_parameters[name] = real[name]
