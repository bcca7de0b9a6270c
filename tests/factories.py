"""factory_boy factories for the domain models."""

from datetime import timedelta

import factory
from django.contrib.auth.models import Group, User
from django.utils import timezone

from twosv import models


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct horse battery staple")

    @factory.post_generation
    def groups(self, create: bool, extracted: list[str] | None, **kwargs: object) -> None:
        if create and extracted:
            self.groups.add(*(Group.objects.get(name=name) for name in extracted))


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Customer
        django_get_or_create = ("customer_id",)

    customer_id = factory.Sequence(lambda n: f"cust-{n:05d}")
    display_name = factory.Faker("name")


class MethodFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Method

    customer = factory.SubFactory(CustomerFactory)
    method_id = factory.Sequence(lambda n: f"m-{n:06d}")
    kind = models.MethodKind.SMS
    role = models.MethodRole.PRIMARY
    phone_number = factory.Sequence(lambda n: f"+1415555{n % 10000:04d}")
    label = ""
    visible_in_crm = factory.LazyAttribute(lambda o: o.role == models.MethodRole.PRIMARY)
    enrolled_at = factory.LazyFunction(lambda: timezone.now() - timedelta(days=30))


class AuthenticatorMethodFactory(MethodFactory):
    kind = models.MethodKind.AUTHENTICATOR_APP
    role = models.MethodRole.BACKUP
    phone_number = ""


class LocalDeliveryRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.LocalDeliveryRecord

    to = "+14155550100"
    sender = "+14803605516"
    provider = "twilio"
    status = "delivered"
    error_code = None
    created_at = factory.LazyFunction(lambda: timezone.now() - timedelta(minutes=5))
    updated_at = factory.LazyAttribute(lambda o: o.created_at + timedelta(seconds=5))
