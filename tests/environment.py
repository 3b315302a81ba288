"""Test-only environment, loaded as a pytest plugin (`-p tests.environment`).

It runs before pytest-django reads the settings, so the suite runs with production
settings (DEBUG off) and only the values a deployment must supply filled in.
"""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-for-any-deployment")
os.environ.setdefault("DJANGO_DEBUG", "false")
