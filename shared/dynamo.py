"""Plain Python values to and from DynamoDB's typed attribute values."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_dynamo_value(value: Any) -> Any:
    # DynamoDB has no floats: numbers go through Decimal, via JSON so nested maps work too.
    return json.loads(json.dumps(value), parse_float=Decimal)


def to_attribute(value: Any) -> dict:
    return _serializer.serialize(_to_dynamo_value(value))


def to_item(values: dict[str, Any]) -> dict[str, dict]:
    return {key: to_attribute(value) for key, value in values.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _plain(inner) for key, inner in value.items()}
    if isinstance(value, (list, set, tuple)):
        return [_plain(inner) for inner in value]
    return value


def from_item(item: dict[str, dict]) -> dict[str, Any]:
    return {key: _plain(_deserializer.deserialize(value)) for key, value in item.items()}


def is_conditional_failure(error: Exception) -> bool:
    response = getattr(error, "response", None) or {}
    return response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


async def put_if_absent(dynamodb: Any, table: str, item: dict[str, Any], key_attribute: str) -> bool:
    """PutItem unless an item with this key exists; False when it did (a repeat)."""
    try:
        await dynamodb.put_item(
            TableName=table, Item=to_item(item), ConditionExpression=f"attribute_not_exists({key_attribute})"
        )
        return True
    except Exception as error:
        if is_conditional_failure(error):
            return False
        raise
