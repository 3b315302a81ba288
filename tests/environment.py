"""Test-only environment, loaded as a pytest plugin (`-p tests.environment`).

It runs before pytest-django reads the settings, so the suite runs with production
settings (DEBUG off) and only the values a deployment must supply filled in.
"""

import os
import tempfile

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-for-any-deployment")
os.environ.setdefault("DJANGO_DEBUG", "false")
# An empty static root (whitenoise warns when the configured one does not exist).
os.environ.setdefault("STATIC_ROOT", tempfile.mkdtemp(prefix="payment-static-"))
