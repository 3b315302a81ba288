import pytest

from payment_app.services import outcome_rng_reset


@pytest.fixture(autouse=True)
def _fresh_outcome_rng():
    """Each test starts its outcome sequence from the settings it runs with."""
    outcome_rng_reset()
    yield
    outcome_rng_reset()
