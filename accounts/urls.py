"""Placed before django.contrib.auth.urls, so that these take its paths and names."""

from django.urls import path

from . import views

urlpatterns = [
    path("login/", views.login, name="login"),
    path("password_reset/", views.password_reset, name="password_reset"),
    path("password_reset/done/", views.password_reset_done, name="password_reset_done"),
    path("reset/<uidb64>/<token>/", views.password_reset_confirm, name="password_reset_confirm"),
    path("reset/done/", views.password_reset_complete, name="password_reset_complete"),
]
