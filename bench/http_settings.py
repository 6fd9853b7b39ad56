"""The portal's settings with one addition: the benchmark's bare view (bench.http_urls.py).

Only ``bench/bench_http.py`` selects this module (DJANGO_SETTINGS_MODULE of the gunicorn it
starts), so the bare view is never among the URLs the portal serves.
"""

from portal.settings import *  # noqa: F403

ROOT_URLCONF = "bench.http_urls"
