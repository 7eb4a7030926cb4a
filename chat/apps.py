from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from chat import signals, views
        from chatsite import env
        from perf.cache import register_family
        from projects.views import add_project_page_part

        # Every change invalidates these exactly (chat.signals catches writes outside the services).
        for family in ("messages", "profiles", "rooms", "access", "room_lists", "tokens"):
            register_family(family, ttl=env.CACHE_TTL_ENTRIES)
        signals.connect()
        add_project_page_part(views.project_page_rooms)
