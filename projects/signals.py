"""What projects announce. Apps above it (chat) listen; projects imports none of them."""

from django.dispatch import Signal

# Sent by projects.services.project_create inside its transaction, once the
# owner's membership exists: ``project`` and ``user`` (the owner). A receiver
# that raises undoes the creation.
project_created = Signal()
