"""Your profile: display name and e-mail address, on the page and over the API."""

from __future__ import annotations

import orjson
import pytest
from django.test import Client

from chat.services import messages as message_services
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

API = "/api/v1"


def test_the_profile_page_changes_name_and_e_mail(chat_world, api_client):
    member = chat_world["member"]
    client = Client()
    assert client.login(username=member.username, password=PASSWORD)
    assert 'name="email"' in client.get("/account/profile/").content.decode()
    response = client.post("/account/profile/", {"first_name": "Mia", "last_name": "Ember", "email": "mia@example.com"})
    assert response.status_code == 302
    member.refresh_from_db()
    assert (member.first_name, member.last_name, member.email) == ("Mia", "Ember", "mia@example.com")
    bad = client.post("/account/profile/", {"first_name": "Mia", "email": "not an address"})
    assert bad.status_code == 200 and "Enter a valid email address." in bad.content.decode()
    # Messages show the new name at once (the cached profile was dropped).
    message_services.message_create(room=chat_world["public"], author=member, body="hi")
    items = api_client(chat_world["owner"]).get(f"{API}/rooms/{chat_world['public'].id}/messages").json()["items"]
    assert items[-1]["author"]["display_name"] == "Mia Ember"


def test_the_api_reads_and_changes_your_profile(chat_world, api_client):
    client = api_client(chat_world["member"])
    assert client.get(f"{API}/me").json()["email"] == ""
    changed = client.patch(f"{API}/me", orjson.dumps({"email": "m@example.com"}), content_type="application/json")
    assert changed.status_code == 200 and changed.json()["email"] == "m@example.com"
    assert changed.json()["display_name"] == "member"  # what was left out stayed
    bad = client.patch(f"{API}/me", orjson.dumps({"email": "nope"}), content_type="application/json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_email"
    long = client.patch(f"{API}/me", orjson.dumps({"first_name": "x" * 151}), content_type="application/json")
    assert long.status_code == 400 and long.json()["code"] == "invalid_name"
    cleared = client.patch(f"{API}/me", orjson.dumps({"email": ""}), content_type="application/json")
    assert cleared.json()["email"] == ""
