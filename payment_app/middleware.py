"""The admin's middleware, skipped on the charge API; and the HTTP metrics.

Sessions, CSRF, authentication and messages serve the admin (a browser with a cookie).
The charge API is unauthenticated and CSRF-exempt, and there they only cost time
(docs/performance.md). These subclasses of Django's own pass requests under API_PREFIX
straight on and behave exactly as Django's everywhere else (the admin, the API docs,
health). Being subclasses, the admin's system checks still find them in MIDDLEWARE.
"""

import time

from django.contrib.auth.middleware import AuthenticationMiddleware as _AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware as _MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as _SessionMiddleware
from django.middleware.csrf import CsrfViewMiddleware as _CsrfViewMiddleware

from payment_app import metrics

API_PREFIX = "/api/v1/"


class _OutsideApiOnly:
    def __call__(self, request):
        if request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        return super().__call__(request)


class SessionMiddleware(_OutsideApiOnly, _SessionMiddleware):
    pass


class CsrfViewMiddleware(_OutsideApiOnly, _CsrfViewMiddleware):
    def process_view(self, request, callback, callback_args, callback_kwargs):
        if request.path_info.startswith(API_PREFIX):
            return None
        return super().process_view(request, callback, callback_args, callback_kwargs)


class AuthenticationMiddleware(_OutsideApiOnly, _AuthenticationMiddleware):
    pass


class MessageMiddleware(_OutsideApiOnly, _MessageMiddleware):
    pass


class MetricsMiddleware:
    """Counts and times every request the application answers, by URL pattern name.

    First in MIDDLEWARE, so it sees every answer, the JSON error pages included.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = request.resolver_match
        route = (match.view_name if match else None) or ("static" if request.path_info.startswith("/static/") else "unmatched")
        metrics.http_request(
            route=route, method=request.method, status=response.status_code, seconds=time.perf_counter() - started
        )
        return response
