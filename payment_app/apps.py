from django.apps import AppConfig


class PaymentAppConfig(AppConfig):
    name = "payment_app"
    verbose_name = "Payments"

    def ready(self):
        from django.core.signals import request_started
        from django.db.backends.signals import connection_created

        from payment_app import sqlite

        connection_created.connect(sqlite.remember_database_file, dispatch_uid="payment_remember_database_file")
        request_started.connect(sqlite.drop_connections_to_moved_database, dispatch_uid="payment_drop_moved_database")
