"""The admin app, configured to use the project's admin site (chat.admin_site)."""

from django.contrib.admin.apps import AdminConfig as DjangoAdminConfig


class AdminConfig(DjangoAdminConfig):
    default_site = "chat.admin_site.ChatAdminSite"
