"""Login and password reset views: Django's, with the reset offered only when mail is configured
(``PASSWORD_RESET_ENABLED``, from PORTAL_EMAIL_HOST) and throttled per hour."""

import math
from functools import wraps

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.http import Http404
from django.shortcuts import render

from devices.throttle import client_address

from .models import PasswordResetRequest


class LoginView(auth_views.LoginView):
    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["password_reset_enabled"] = settings.PASSWORD_RESET_ENABLED
        return context


def mail_required(view):
    """404 unless mail is configured: without it a reset mail could never arrive."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not settings.PASSWORD_RESET_ENABLED:
            raise Http404("Password reset is not offered: no mail is configured.")
        return view(request, *args, **kwargs)

    return wrapper


class PasswordResetView(auth_views.PasswordResetView):
    def form_valid(self, form):
        email = form.cleaned_data["email"]
        address = client_address(self.request)
        retry_after = PasswordResetRequest.objects.retry_after(email, address)
        if retry_after is not None:
            response = render(
                self.request,
                "registration/password_reset_throttled.html",
                {"minutes": math.ceil(retry_after / 60)},
                status=429,
            )
            response["Retry-After"] = str(retry_after)
            return response
        PasswordResetRequest.objects.record(email, address)
        return super().form_valid(form)


login = LoginView.as_view()
password_reset = mail_required(PasswordResetView.as_view())
password_reset_done = mail_required(auth_views.PasswordResetDoneView.as_view())
password_reset_confirm = mail_required(auth_views.PasswordResetConfirmView.as_view())
password_reset_complete = mail_required(auth_views.PasswordResetCompleteView.as_view())
