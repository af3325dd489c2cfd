"""Plain Python values to and from DynamoDB's typed attribute values."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
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


def conditional_failure_item(error: Exception) -> dict[str, Any] | None:
    """The item as it stood when a write asking for ReturnValuesOnConditionCheckFailure=ALL_OLD
    was refused (None when there was none)."""
    item = (getattr(error, "response", None) or {}).get("Item")
    return from_item(item) if item else None


async def put_if_absent(dynamodb: Any, table: str, item: dict[str, Any], key_attribute: str) -> bool:
    """PutItem unless an item with this key exists; False when it did (a repeat).

    True as well when the item there is this very item: botocore retried a put
    whose response was lost, and the retry met its own first attempt.
    """
    stored = to_item(item)
    try:
        await dynamodb.put_item(
            TableName=table, Item=stored, ConditionExpression=f"attribute_not_exists({key_attribute})",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return True
    except Exception as error:
        if is_conditional_failure(error):
            return conditional_failure_item(error) == from_item(stored)
        raise


async def stored_items(dynamodb: Any, operation: str, **request: Any) -> AsyncIterator[dict[str, Any]]:
    """Every item a Query or Scan (`operation`) finds, as DynamoDB returns them (typed
    attribute values), through the client's paginator: all pages, or up to
    `PaginationConfig={"MaxItems": n}` (`"PageSize"` sets each request's Limit)."""
    async for page in dynamodb.get_paginator(operation).paginate(**request):
        for item in page.get("Items", []):
            yield item


async def items(dynamodb: Any, operation: str, **request: Any) -> AsyncIterator[dict[str, Any]]:
    """`stored_items` as plain Python values."""
    async for item in stored_items(dynamodb, operation, **request):
        yield from_item(item)


async def delete_queried(dynamodb: Any, table: str, query: dict[str, Any], key_attributes: tuple[str, ...]) -> int:
    """Erasure: delete every item a query finds (all its pages); how many there were.
    `query` is a Query request without TableName; `key_attributes` the table's key."""
    deleted = 0
    async for item in stored_items(dynamodb, "query", **query, TableName=table):
        await dynamodb.delete_item(TableName=table, Key={name: item[name] for name in key_attributes})
        deleted += 1
    return deleted
