"""The JSON API at /api/v1/ (django-ninja). Routers live in the apps' api.py modules."""

from ninja import NinjaAPI

api = NinjaAPI(title="Chat API", version="1", urls_namespace="api")
