"""Production: secrets and services from the environment, secure defaults."""

from django.core.exceptions import ImproperlyConfigured

from chatsite import env

from .base import *  # noqa: F401,F403

if not env.SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set in production")
if not env.DATABASE_URL or not env.REDIS_URL:
    raise ImproperlyConfigured("DATABASE_URL and REDIS_URL must be set in production")

DEBUG = False
# No SECURE_PROXY_SSL_HEADER: a TLS proxy listed in TRUSTED_PROXIES has its
# X-Forwarded-Proto put into the ASGI scope's scheme (chatsite.asgi), which is
# what request.is_secure() reads; from anyone else the header means nothing.
SECURE_SSL_REDIRECT = env.env_bool("SECURE_SSL_REDIRECT", True)
# The container health check asks over plain HTTP from inside the container.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Static files: collectstatic with whitenoise's storage writes content-hashed
# names with .br and .gz beside them; its middleware serves them immutable for
# ten years, and plain (unhashed) names for WHITENOISE_MAX_AGE seconds. Right
# after SecurityMiddleware: before compression (the files come compressed) and
# before sessions and authentication (assets need neither).
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}}  # noqa: F405
_security = MIDDLEWARE.index("django.middleware.security.SecurityMiddleware")  # noqa: F405
MIDDLEWARE = [*MIDDLEWARE[: _security + 1], "whitenoise.middleware.WhiteNoiseMiddleware", *MIDDLEWARE[_security + 1 :]]  # noqa: F405
WHITENOISE_MAX_AGE = 60
