from django.urls import path

from perf import views

urlpatterns = [
    path("db/", views.report, name="perf-report"),
]
