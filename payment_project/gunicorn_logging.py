"""gunicorn's logger, without the per-request work of an access log nobody reads.

gunicorn builds the access-log atoms of every request (a dict of ~30 entries from the
headers and environ) whenever a `logconfig_dict` is set, even when that dict leaves the
`gunicorn.access` logger at WARNING so the INFO line is dropped. That was ~4% of a
worker's CPU per charge (docs/performance.md). This logger builds them only when the
access logger would emit the line (GUNICORN_ACCESS_LOG=true). Plain gunicorn, no Django:
the master loads it before Django.
"""

import logging

from gunicorn import glogging


class Logger(glogging.Logger):
    def setup(self, cfg):
        super().setup(cfg)  # applies logconfig_dict, which sets the access logger's level
        self._access_log_enabled = self._access_log_enabled and self.access_log.isEnabledFor(logging.INFO)
