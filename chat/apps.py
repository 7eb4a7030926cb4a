from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from chat import signals, views
        from projects.views import add_project_page_part

        signals.connect()
        add_project_page_part(views.project_page_rooms)
