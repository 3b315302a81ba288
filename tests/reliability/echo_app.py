"""A WSGI application for the proxy tests: answers, as JSON, how Django (with the
service's settings) sees the request it got: scheme, client address, host and the
forwarding headers. Started under the real gunicorn config, behind the real nginx:

    scripts/entrypoint gunicorn --config gunicorn.conf.py tests.reliability.echo_app:application
"""

import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "payment_project.settings")

import django  # noqa: E402

django.setup()

from django.core.handlers.wsgi import WSGIRequest  # noqa: E402


def application(environ, start_response):
    request = WSGIRequest(environ)
    seen = {
        "scheme": request.scheme,
        "is_secure": request.is_secure(),
        "remote_addr": request.META.get("REMOTE_ADDR"),
        "host": request.META.get("HTTP_HOST"),
        "forwarding": {key: value for key, value in request.META.items()
                       if key.startswith("HTTP_X_FORWARDED") or key == "HTTP_FORWARDED"},
    }
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
