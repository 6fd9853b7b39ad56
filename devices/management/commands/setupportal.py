"""First-run set-up for `make run`: an admin account and a demo product with one device."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from devices.models import Device, Product

DEMO_PRODUCT_ID = "demo-product"
DEMO_DEVICE_ID = "demo-device-001"


class Command(BaseCommand):
    help = "Create the admin account and a demo device on the first run (does nothing later)."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    @transaction.atomic
    def handle(self, *args, username, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("Portal already set up; log in with the admin account made on the first run.")
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        product, _ = Product.objects.get_or_create(
            product_id=DEMO_PRODUCT_ID,
            defaults={"name": "Demo product", "description": "Made by the first `make run`."},
        )
        Device.objects.get_or_create(
            product=product, device_id=DEMO_DEVICE_ID, defaults={"name": "Demo device"}
        )
        self.stdout.write(self.style.SUCCESS("Created the admin account and a demo device."))
        self.stdout.write(f"  username: {username}")
        self.stdout.write(f"  password: {password}   (shown only this once; change it in the admin)")
