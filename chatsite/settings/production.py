"""Production: secrets and services from the environment, secure defaults."""

from django.core.exceptions import ImproperlyConfigured

from chatsite import env

from .base import *  # noqa: F401,F403

if not env.SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set in production")
if not env.DATABASE_URL or not env.REDIS_URL:
    raise ImproperlyConfigured("DATABASE_URL and REDIS_URL must be set in production")

DEBUG = False
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.env_bool("SECURE_SSL_REDIRECT", True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}
