"""Console pages. The API and the broker hooks are wired in portal/urls.py."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
]
