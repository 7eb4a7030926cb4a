from django.urls import path

from perf import dashboard, views

urlpatterns = [
    path("", dashboard.dashboard, name="perf-dashboard"),
    path("dashboard.json", dashboard.dashboard_json, name="perf-dashboard-json"),
    path("db/", views.report, name="perf-report"),
]
