"""`python manage.py createapitoken USERNAME`: an API token for scripts, shown only this once.

The token is printed alone on the last line, so that scripts can take it with ``tail -n 1``.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from devices.choices import Permission
from devices.models import ApiToken


class Command(BaseCommand):
    help = "Make an API token for USERNAME and print it (alone on the last line; shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--name", default="", help="What the token is for (shown in the admin)."
        )

    def handle(self, *args, username, name, **options):
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"There is no user {username!r}.") from None
        if not user.is_active:
            raise CommandError(f"The user {username!r} is inactive; its tokens would be refused.")
        record, token = ApiToken.issue(user, name=name[:100])
        self.stdout.write(
            f"API token {record.token_prefix}… for {username} (shown only this once; "
            "revoke it by deleting it in the admin):"
        )
        if not user.has_perm(Permission.VIEW_SECRET):
            self.stdout.write(
                f"Note: this user lacks {Permission.VIEW_SECRET}, so mqtt-params answers 403."
            )
        self.stdout.write(token)
