from django.contrib import admin
from django.urls import include, path

from chatsite import health
from chatsite.api import api
from perf import profiling

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("perf/", include("perf.urls")),
    # django-silk's profiler UI: staff only (SILKY_AUTHENTICATION/AUTHORISATION).
    path("silk/", include(profiling.silk_urls(), namespace="silk")),
    path("api/v1/", api.urls),
    path("", include("chat.urls")),
]

# Database errors raised outside a view (in a middleware) get the same 503 as inside one.
handler500 = "perf.views.server_error"
