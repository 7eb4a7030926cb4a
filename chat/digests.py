"""The worker's digest sender: every ``NOTIFY_DIGEST_CHECK`` seconds, e-mail what is due (chat.services.notifications)."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import connections

from chat.services import notifications as notification_services

logger = logging.getLogger(__name__)


class DigestSender(threading.Thread):
    """A daemon thread of ``manage.py chat_worker``: it ends with the process, or at :meth:`stop`.

    Errors (the mail server down, say) are logged and the next check tries
    again: notices stay pending until an e-mail for them went out.
    """

    def __init__(self, *, every: float) -> None:
        super().__init__(name="digest-sender", daemon=True)
        self.every = every
        self._stopped = threading.Event()

    @classmethod
    def from_settings(cls) -> DigestSender | None:
        every = settings.CHAT_DIGEST_CHECK
        return cls(every=every) if every > 0 else None

    def run(self) -> None:
        while not self._stopped.wait(self.every):
            try:
                sent = notification_services.digests_send()
                if sent:
                    logger.info("digests sent: %d", sent)
            except Exception:  # noqa: BLE001 - the next check tries again
                logger.exception("sending digests failed")
            finally:
                connections.close_all()

    def stop(self) -> None:
        self._stopped.set()
