from django.urls import path

from chat import consumers
from chatsite import env

websocket_urlpatterns = [
    path("ws/", consumers.ChatConsumer.as_asgi()),
]

if env.BENCH_REFERENCE_CONSUMER:
    # The benchmark's naive tutorial-style consumer, for comparison runs only.
    from bench.reference_consumer import ReferenceChatConsumer

    websocket_urlpatterns.append(path("ws/reference/", ReferenceChatConsumer.as_asgi()))
