import pytest

from tests.reliability.harness import FaultServer


@pytest.fixture
def servers(tmp_path):
    """Start real servers with `servers(env=...)`; every one is stopped at teardown, even on failure."""
    started: list[FaultServer] = []

    def start(name: str = "server", *, env: dict[str, str] | None = None, database_url: str | None = None,
              **kwargs) -> FaultServer:
        srv = FaultServer(tmp_path / name, env=env or {}, database_url=database_url)
        started.append(srv)
        return srv.start(**kwargs)

    yield start
    for srv in started:
        srv.stop(timeout=30)
