from django.apps import AppConfig


class PaymentAppConfig(AppConfig):
    name = "payment_app"
    verbose_name = "Payments"
