"""WSGI entry point, served by gunicorn (see gunicorn.conf.py)."""

import os

from django.core.wsgi import get_wsgi_application

from payment_project import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "payment_project.settings")

# Before the application builds its middleware chain: the Django instrumentation adds its own.
tracing.instrument()
application = get_wsgi_application()
