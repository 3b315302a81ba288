"""Routes. Every error answer, on any path, is JSON (payment_app.errors)."""

from django.contrib import admin
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from health_check.views import HealthCheckView

from payment_app.apis import ChargeCreateApi
from payment_app.health import DatabaseWritable, MigrationsApplied, ReadinessView

urlpatterns = [
    # With and without the trailing slash, and no redirect between them: Antaeus does
    # not follow a redirect for a POST it cannot re-send.
    path("api/v1/charges", ChargeCreateApi.as_view(), name="charge-create"),
    path("api/v1/charges/", ChargeCreateApi.as_view(schema=None), name="charge-create-slash"),  # same operation, one schema entry
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    # Liveness: the process answers; no dependency, so a slow disk never restarts the pod.
    path("healthz", HealthCheckView.as_view(checks=[]), name="healthz"),
    # Readiness: the database answers, takes writes and carries every migration.
    # (DatabaseWritable queries the database itself, so django-health-check's Database
    # check would add nothing but its driver message, which may name the host.)
    path("readyz", ReadinessView.as_view(checks=[DatabaseWritable, MigrationsApplied]), name="readyz"),
    path("admin/", admin.site.urls),
]

handler400 = "payment_app.errors.bad_request"
handler403 = "payment_app.errors.permission_denied"
handler404 = "payment_app.errors.not_found"
handler500 = "payment_app.errors.server_error"
