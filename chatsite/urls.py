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

# Under /api/ every error Django answers itself is the API's JSON body (chatsite.error_handlers);
# database errors raised outside a view (in a middleware) get the same 503 as inside one.
handler400 = "chatsite.error_handlers.bad_request"
handler403 = "chatsite.error_handlers.permission_denied"
handler404 = "chatsite.error_handlers.page_not_found"
handler500 = "chatsite.error_handlers.server_error"
