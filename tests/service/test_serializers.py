"""The charge serializers' shallow field copies bind like DRF's deep copies."""

from decimal import Decimal

import pytest
from rest_framework import serializers

from payment_app.apis import ChargeCreateApi


@pytest.mark.parametrize("serializer_class", [ChargeCreateApi.InputSerializer, ChargeCreateApi.OutputSerializer])
def test_each_instance_binds_its_own_fields_and_leaves_the_declared_ones_alone(serializer_class):
    first, second = serializer_class(), serializer_class()
    for name, declared in serializer_class._declared_fields.items():
        bound_first, bound_second = first.fields[name], second.fields[name]
        assert bound_first is not declared and bound_first is not bound_second
        assert type(bound_first) is type(declared)
        assert bound_first.parent is first and bound_second.parent is second
        assert bound_first.field_name == name
        assert declared.parent is None and declared.field_name is None  # bind() never touched it
        # Everything __init__ set up is the declared field's, validators included.
        assert bound_first.validators == declared.validators
        assert bound_first.error_messages == declared.error_messages


def test_validation_through_the_copies_keeps_the_declared_bounds():
    ok = ChargeCreateApi.InputSerializer(data={"customer_id": 1, "value": Decimal("301.99"), "currency": {}})
    assert ok.is_valid(), ok.errors
    too_low = ChargeCreateApi.InputSerializer(data={"customer_id": 0, "value": Decimal("1"), "currency": {}})
    assert not too_low.is_valid() and "customer_id" in too_low.errors
    # The failed validation left the next instance's fields as declared.
    again = ChargeCreateApi.InputSerializer(data={"customer_id": 2, "value": Decimal("1"), "currency": {}})
    assert again.is_valid(), again.errors
    assert isinstance(again.fields["customer_id"], serializers.IntegerField)
