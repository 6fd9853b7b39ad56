"""Account pages around django.contrib.auth: the login page, and password reset by mail, which
is offered only when mail is configured and is throttled (``PasswordResetRequest``)."""
