"""The demo data `make run` serves: ``manage.py seed_demo``.

alice, bob, carol and a staff superuser ``admin`` (password ``DEMO_PASSWORD``);
the project "Demo" with the rooms "general" and "random" and a short
conversation. Every write goes through the services, so the demo data obeys
exactly the rules the app does (and its messages are published to the channel
layer like any other). The large data set for load tests is the benchmarks'
business (bench/seeding.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model

from chat.models import Room
from chat.services import accounts as account_services
from chat.services import messages as message_services
from chat.services import rooms as room_services
from projects import services as project_services
from projects.models import Membership, Project

User = get_user_model()

DEMO_USERS = (
    # username, first name, last name, staff superuser
    ("alice", "Alice", "Archer", False),
    ("bob", "Bob", "Baker", False),
    ("carol", "Carol", "Chen", False),
    ("admin", "Site", "Admin", True),
)
DEMO_PROJECT_SLUG = "demo"

# (room slug, author, body): a conversation that reads like one.
DEMO_CONVERSATION = (
    ("general", "alice", "Morning all! Welcome to the Demo project."),
    ("general", "bob", "Morning! Coffee first, then the release notes."),
    ("general", "carol", "Hi both. I pushed the fix for the login redirect last night."),
    ("general", "alice", "Great, thanks Carol. Did it need a migration?"),
    ("general", "carol", "No, settings only. The test that reproduced it is in the same commit."),
    ("general", "bob", "I'll deploy it to staging after standup."),
    ("general", "alice", "Standup in 10 minutes, same link as yesterday."),
    ("general", "bob", "Running two minutes late, start without me."),
    ("general", "carol", "Notes from standup: release on Thursday, Bob owns the changelog."),
    ("general", "alice", "Can someone review the unread-count change? It's small."),
    ("general", "bob", "On it."),
    ("general", "bob", "Looks good. One question: does it still do one query per room list?"),
    ("general", "alice", "Yes, one query whatever the number of rooms. There's a test pinning it."),
    ("general", "carol", "Staging is green, by the way."),
    ("general", "bob", "Deployed to staging. Please click around the room list when you have a minute."),
    ("general", "alice", "Clicked around, all fine. Unread badges update live too."),
    ("general", "carol", "I'll write the announcement for Thursday."),
    ("general", "bob", "Changelog draft is up for review."),
    ("general", "alice", "Approved. Thanks everyone, nice week so far."),
    ("general", "carol", "Heading out, see you tomorrow!"),
    ("random", "bob", "Anyone tried the new ramen place on the corner?"),
    ("random", "carol", "Yes! Get the spicy miso, skip the gyoza."),
    ("random", "alice", "Noted. Lunch there on Friday?"),
    ("random", "bob", "I'm in."),
    ("random", "carol", "Me too. 12:30 so we miss the queue?"),
    ("random", "alice", "12:30 it is."),
    ("random", "bob", "Unrelated: my cat just walked across the keyboard and opened three terminals."),
    ("random", "carol", "Promote the cat to on-call."),
    ("random", "alice", "The cat already has better uptime than my laptop."),
    ("random", "bob", "Ha. Back to work."),
)


@dataclass
class DemoResult:
    created_users: list[str] = field(default_factory=list)
    created_project: bool = False
    created_rooms: list[str] = field(default_factory=list)
    created_messages: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created_users or self.created_project or self.created_rooms or self.created_messages)

    def summary(self) -> str:
        """One line on what the run created."""
        if not self.changed:
            return "Demo data already seeded."
        return (
            f"Demo data created: users {', '.join(self.created_users) or '-'}; "
            f"project {'demo' if self.created_project else '(existed)'}; "
            f"{self.created_messages} messages."
        )


def demo_seed() -> DemoResult:
    """Create the demo users, project, rooms and conversation; skip what exists.

    Every write goes through the services. Messages are only written to a
    room that has none, so a second run (or one after people chatted) adds
    nothing.
    """
    result = DemoResult()
    users: dict[str, Any] = {}
    for username, first, last, staff in DEMO_USERS:
        user = User.objects.filter(username=username).first()
        if user is None:
            user = account_services.user_create(
                username=username,
                password=settings.DEMO_PASSWORD,
                first_name=first,
                last_name=last,
                is_staff=staff,
            )
            result.created_users.append(username)
        users[username] = user

    owner = users["alice"]
    project = Project.objects.filter(slug=DEMO_PROJECT_SLUG).first()
    if project is None:
        project = project_services.project_create(
            user=owner, name="Demo", slug=DEMO_PROJECT_SLUG, description="A project to try the chat in."
        )
        result.created_project = True
    member_ids = set(Membership.objects.filter(project=project).values_list("user_id", flat=True))
    for username in ("bob", "carol"):
        if users[username].pk not in member_ids:
            # People join by accepting an invitation, here as in the app.
            project_services.invitation_create(project=project, username=username, by=owner)
            invitation = project.invitations.get(user=users[username])
            project_services.invitation_accept(invitation=invitation, user=users[username])

    if not Room.objects.filter(project=project, slug="general").exists():
        room_services.room_create(project=project, user=owner, name="general", topic="Everything and anything")
        result.created_rooms.append("general")
    if not Room.objects.filter(project=project, slug="random").exists():
        room_services.room_create(project=project, user=users["bob"], name="random", topic="Off-topic, lunch, cats")
        result.created_rooms.append("random")

    rooms = {room.slug: room for room in Room.objects.select_related("project").filter(project=project)}
    empty = {slug for slug, room in rooms.items() if room.last_message_seq == 0}
    for slug, author, body in DEMO_CONVERSATION:
        if slug in empty:
            message_services.message_create(room=rooms[slug], author=users[author], body=body)
            result.created_messages += 1
    return result
