from django.apps import AppConfig


class PerfConfig(AppConfig):
    name = "perf"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from perf.db import install_query_wrapper

        # Every connection, whatever opened it: requests, consumers, commands, workers.
        connection_created.connect(install_query_wrapper, dispatch_uid="perf.install_query_wrapper")

        from chatsite import env

        if env.PROMETHEUS_MULTIPROC_DIR:
            from perf import context, process

            # A management command beside the servers (the background worker, the exporter) is
            # one of the deployment's processes, named after its command; servers register at start-up.
            command = context.current().get("command")
            if command:
                process.register(command)
