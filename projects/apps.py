from django.apps import AppConfig


class ProjectsConfig(AppConfig):
    name = "projects"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from chatsite import env
        from perf.cache import register_family

        # A project by slug: its saves and deletes invalidate it exactly (chat.signals' model hooks).
        register_family("projects", ttl=env.CACHE_TTL_ENTRIES)
