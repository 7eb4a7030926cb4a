"""Invite links through projects.services and projects.selectors, against the real database."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections, transaction
from django.utils import timezone

from chatsite.errors import Forbidden, Gone, InvalidInput, NotFound
from chatsite.ratelimit import RateLimited
from projects import selectors, services
from projects.models import Invitation, InviteLink, Membership
from tests.projects.test_api import _wait_for_a_lock_wait


def make_link(chat_world, *, by: str = "owner", **kwargs):
    return services.invite_link_create(project=chat_world["project"], by=chat_world[by], **kwargs)


@pytest.mark.parametrize(("who", "role"), [("owner", "member"), ("owner", "admin"), ("admin", "member")])
def test_owners_and_admins_make_links_and_only_the_hash_is_stored(chat_world, who, role):
    link, raw = make_link(chat_world, by=who, role=role, max_uses=3)
    assert len(raw) == 32  # 24 random bytes, URL-safe
    stored = InviteLink.objects.get()
    assert stored.token_hash == InviteLink.hash_token(raw) != raw
    assert raw not in {str(v) for v in InviteLink.objects.values().get().values()}
    assert (stored.role, stored.max_uses, stored.uses, stored.created_by) == (role, 3, 0, chat_world[who])
    assert stored.state_at(timezone.now()) == InviteLink.State.ACTIVE
    assert make_link(chat_world, by=who)[1] != raw  # every link has its own token


def test_who_may_make_links(chat_world):
    with pytest.raises(Forbidden):
        make_link(chat_world, by="admin", role="admin")  # only owners hand out admin
    for who in ("member", "insider"):
        with pytest.raises(Forbidden):
            make_link(chat_world, by=who)
    for who in ("outsider", "staff"):
        with pytest.raises(NotFound):  # the project stays hidden
            make_link(chat_world, by=who)
    assert not InviteLink.objects.exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"role": "owner"},
        {"role": ""},
        {"max_uses": 0},
        {"max_uses": -1},
        {"max_uses": services.INVITE_LINK_MAX_USES + 1},
        {"expires_at": "past"},
        {"expires_at": "far"},
        {"expires_at": "naive"},
    ],
)
def test_bad_link_settings_are_refused(chat_world, kwargs):
    now = timezone.now()
    when = {
        "past": now - timedelta(seconds=1),
        "far": now + timedelta(days=366),
        "naive": timezone.make_naive(now + timedelta(hours=1)),
    }
    if "expires_at" in kwargs:
        kwargs = {"expires_at": when[kwargs["expires_at"]]}
    with pytest.raises(InvalidInput):
        make_link(chat_world, **kwargs)
    assert not InviteLink.objects.exists()


def test_making_links_is_rate_limited_per_maker(chat_world, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "invite_link": "2/3600"}
    make_link(chat_world)
    make_link(chat_world)
    with pytest.raises(RateLimited):
        make_link(chat_world)
    make_link(chat_world, by="admin")  # another maker has their own count
    assert InviteLink.objects.count() == 3


def test_join_makes_a_membership_with_the_links_role_and_counts_a_use(chat_world):
    project, outsider = chat_world["project"], chat_world["outsider"]
    # Cached "not a member" first: the join must drop it (the membership's cache hooks).
    with pytest.raises(NotFound):
        selectors.project_get_for_user(user=outsider, slug=project.slug)
    link, raw = make_link(chat_world, role="admin", max_uses=2)
    membership, joined = services.invite_link_join(token=raw, user=outsider)
    assert joined and (membership.project, membership.user, membership.role) == (project, outsider, "admin")
    assert InviteLink.objects.get().uses == 1
    assert selectors.project_get_for_user(user=outsider, slug=project.slug)[1].role == "admin"


def test_joining_again_or_as_a_member_counts_no_use(chat_world):
    link, raw = make_link(chat_world, max_uses=1)
    first, joined = services.invite_link_join(token=raw, user=chat_world["outsider"])
    again, joined_again = services.invite_link_join(token=raw, user=chat_world["outsider"])
    assert joined and not joined_again and again.pk == first.pk
    # A member keeps their role, even with an admin link; and no use is counted, even for a used-up link.
    kept, joined = services.invite_link_join(token=raw, user=chat_world["member"])
    assert not joined and kept.role == "member"
    assert InviteLink.objects.get().uses == 1
    assert Membership.objects.filter(project=chat_world["project"], user=chat_world["outsider"]).count() == 1


def test_join_answers_a_pending_invitation(chat_world):
    services.invitation_create(project=chat_world["project"], username="outsider", by=chat_world["owner"])
    _, raw = make_link(chat_world)
    services.invite_link_join(token=raw, user=chat_world["outsider"])
    assert not Invitation.objects.exists()


def test_unknown_tokens_are_not_found(chat_world):
    _, raw = make_link(chat_world)
    for token in ("", "nope", raw[:-1], raw.upper(), InviteLink.objects.get().token_hash):
        with pytest.raises(NotFound):
            services.invite_link_join(token=token, user=chat_world["outsider"])
    assert not Membership.objects.filter(user=chat_world["outsider"]).exists()


def test_revoked_expired_and_used_up_links_are_gone(chat_world, make_user):
    project, outsider = chat_world["project"], chat_world["outsider"]
    revoked, revoked_raw = make_link(chat_world)
    services.invite_link_revoke(link=revoked, by=chat_world["admin"])
    expiring, expiring_raw = make_link(chat_world, expires_at=timezone.now() + timedelta(hours=1))
    InviteLink.objects.filter(pk=expiring.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    single, single_raw = make_link(chat_world, max_uses=1)
    services.invite_link_join(token=single_raw, user=make_user())
    for raw, code in ((revoked_raw, "revoked"), (expiring_raw, "expired"), (single_raw, "used_up")):
        with pytest.raises(Gone) as exc:
            services.invite_link_join(token=raw, user=outsider)
        assert exc.value.code == code and exc.value.status == 410
    assert not Membership.objects.filter(project=project, user=outsider).exists()
    assert InviteLink.objects.get(pk=single.pk).uses == 1


def test_revoke_rules(chat_world, make_project):
    link, raw = make_link(chat_world)
    for who, error in (("member", Forbidden), ("outsider", NotFound), ("staff", NotFound)):
        with pytest.raises(error):
            services.invite_link_revoke(link=link, by=chat_world[who])
    assert InviteLink.objects.get().revoked_at is None
    revoked = services.invite_link_revoke(link=link, by=chat_world["admin"])  # a link someone else made
    first = revoked.revoked_at
    assert first is not None
    assert services.invite_link_revoke(link=link, by=chat_world["owner"]).revoked_at == first  # harmless again
    # Another project's link id is not found through this project.
    with pytest.raises(NotFound):
        selectors.invite_link_get_for_project(project=make_project(), link_id=link.id)


def test_link_lists_newest_first_with_makers_in_one_query(chat_world, django_assert_num_queries):
    project = chat_world["project"]
    ended, _ = make_link(chat_world, max_uses=1)
    InviteLink.objects.filter(pk=ended.pk).update(uses=1)
    live = [make_link(chat_world, by=who)[0] for who in ("owner", "admin", "admin")]
    with django_assert_num_queries(1):
        rows = [(link.id, link.created_by.username) for link in selectors.invite_links_for_project(project=project)]
    assert [r[0] for r in rows] == [link.id for link in reversed([ended, *live])]
    with django_assert_num_queries(1):
        assert [link.id for link in selectors.invite_links_live(project=project, now=timezone.now())] == [
            link.id for link in reversed(live)
        ]


def test_the_database_refuses_uses_past_the_limit(chat_world):
    from django.db import IntegrityError

    link, _ = make_link(chat_world, max_uses=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        InviteLink.objects.filter(pk=link.pk).update(uses=2)


# --- Races ---------------------------------------------------------------------


def _join_in_thread(raw: str, user, results: list, start: threading.Barrier | None = None) -> threading.Thread:
    def run():
        try:
            if start is not None:
                start.wait(timeout=10)
            results.append(services.invite_link_join(token=raw, user=user))
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            results.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_a_second_joiner_waits_for_the_first_and_finds_the_link_used_up(chat_world, make_user):
    """With max_uses=1, a join that arrives while another holds the link waits for it, then is refused."""
    _, raw = make_link(chat_world, max_uses=1)
    first_user, second_user = make_user("first"), make_user("second")
    results: list = []
    with transaction.atomic():
        services.invite_link_join(token=raw, user=first_user)
        thread = _join_in_thread(raw, second_user, results)
        _wait_for_a_lock_wait()
    thread.join(timeout=30)
    (second,) = results
    assert isinstance(second, Gone) and second.code == "used_up"
    assert InviteLink.objects.get().uses == 1
    assert set(Membership.objects.filter(project=chat_world["project"], user__in=[first_user, second_user]).values_list(
        "user__username", flat=True
    )) == {"first"}


@pytest.mark.django_db(transaction=True)
def test_two_people_joining_at_once_with_one_use_left_let_exactly_one_in(chat_world, make_user):
    _, raw = make_link(chat_world, max_uses=1)
    users = [make_user("racer-a"), make_user("racer-b")]
    results: list = []
    start = threading.Barrier(2)
    threads = [_join_in_thread(raw, user, results, start) for user in users]
    for thread in threads:
        thread.join(timeout=30)
    joined = [r for r in results if isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, Gone)]
    assert len(joined) == 1 and len(refused) == 1, results
    assert refused[0].code == "used_up"
    assert InviteLink.objects.get().uses == 1
    assert Membership.objects.filter(project=chat_world["project"], user__in=users).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_double_join_by_one_person_counts_one_use(chat_world):
    _, raw = make_link(chat_world, max_uses=5)
    outsider = chat_world["outsider"]
    results: list = []
    with transaction.atomic():
        services.invite_link_join(token=raw, user=outsider)
        thread = _join_in_thread(raw, outsider, results)
        _wait_for_a_lock_wait()
    thread.join(timeout=30)
    ((membership, joined),) = results
    assert not joined and membership.user_id == outsider.id
    assert InviteLink.objects.get().uses == 1
