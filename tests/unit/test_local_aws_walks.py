"""The local AWS server's faster DynamoDB paths (local_aws.moto_internals: `linear_dynamodb_item_walks`,
`projections_of_what_they_reach`, `attribute_values_as_they_are`, `attribute_values_parsed_as_they_are`,
`projected_queries_without_whole_item_copies`) give exactly what moto's own give, on an item nested as a
stored check-in result is, with every attribute type."""

from __future__ import annotations

from moto.dynamodb.models.dynamo_type import DynamoType

from local_aws.moto_internals import (
    linear_dynamodb_item_walks,
    projections_of_what_they_reach,
)

MARKER = {"M": {"assessed": {"BOOL": True}, "value": {"N": "189.36"}, "unit": {"S": "words per min"},
                "quality_flags": {"L": [{"S": "short_speech"}]}, "reason": {"NULL": True},
                "baseline": {"M": {"available": {"BOOL": True}, "checkins": {"N": "5"}, "rules_fired": {"L": []},
                                   "figures": {"NS": ["1.5", "2"]}, "words": {"SS": ["a", "b"]}}}}}
ITEM = {"M": {"user_id": {"S": "clinic-a.patient-001"}, "timestamp": {"S": "2026-01-01T00:00:00.000000Z"},
              "evidence": {"B": "AAEC"}, "blobs": {"BS": ["AAEC", "AwQ="]}, "empty": {"M": {}},
              "results": {"M": {"answers": {"M": {"items": {"L": [
                  {"M": {"step_id": {"S": "mood"}, "markers": {"M": {"speech_rate": MARKER, "word_count": MARKER}}}},
                  {"M": {"step_id": {"S": "sleep"}, "markers": {"M": {}}}}]}}},
                  "vocal_markers": {"M": {"speech_rate": MARKER}}}}}}


def test_the_linear_walks_give_what_motos_own_give():
    linear_dynamodb_item_walks()
    linear_dynamodb_item_walks()  # idempotent: the originals stay reachable
    walk, size = DynamoType.to_regular_json, DynamoType.size
    assert walk.linear is True
    for document in (ITEM, MARKER, {"S": "x"}, {"N": "3"}, {"L": []}, {"NULL": True}, {"SS": ["a"]}):
        value = DynamoType(document)
        assert walk(value) == walk.moto_original(value)
        assert size(value) == size.moto_original(value)
    value = DynamoType(ITEM)
    first = walk(value)
    first["M"]["results"]["M"]["vocal_markers"]["M"]["speech_rate"]["M"]["baseline"]["M"]["figures"]["NS"].append("9")
    assert walk(value) == walk.moto_original(value)  # a copy: changing what it returned leaves the item as it was


def test_attribute_values_sent_as_they_are_read_back_as_motos_serializer_sends_them():
    """local_aws.moto_internals `attribute_values_as_they_are`: the same Query and GetItem answers as moto's own
    serializer gives, binary attributes (which it leaves to moto) included."""
    import boto3
    from moto import mock_aws
    from moto.core.serialize import ResponseSerializer

    from local_aws.moto_internals import attribute_values_as_they_are

    attribute_values_as_they_are()
    patched = ResponseSerializer._serialize_type_structure
    item = {**ITEM["M"], "evidence": {"B": b"\x00\x01\x02"}, "blobs": {"BS": [b"\x00", b"\x03\x04"]}}
    plain = {key: value for key, value in item.items() if key not in ("evidence", "blobs")}

    def answers() -> tuple:
        client = boto3.client("dynamodb", region_name="us-east-1")
        query = client.query(TableName="T", KeyConditionExpression="user_id = :u",
                             ExpressionAttributeValues={":u": item["user_id"]})["Items"]
        key = {"user_id": item["user_id"], "timestamp": item["timestamp"]}
        return query, client.get_item(TableName="T", Key=key)["Item"]

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(TableName="T", BillingMode="PAY_PER_REQUEST",
                            KeySchema=[{"AttributeName": "user_id", "KeyType": "HASH"},
                                       {"AttributeName": "timestamp", "KeyType": "RANGE"}],
                            AttributeDefinitions=[{"AttributeName": "user_id", "AttributeType": "S"},
                                                  {"AttributeName": "timestamp", "AttributeType": "S"}])
        client.put_item(TableName="T", Item=item)
        client.put_item(TableName="T", Item={**plain, "timestamp": {"S": "2026-01-02T00:00:00.000000Z"}})
        fast = answers()
        ResponseSerializer._serialize_type_structure = patched.moto_original
        try:
            moto_own = answers()
        finally:
            ResponseSerializer._serialize_type_structure = patched
    assert fast == moto_own
    assert fast[1] == item and len(fast[0]) == 2


def test_a_projection_gives_what_motos_own_gives_for_every_kind_of_path():
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    linear_dynamodb_item_walks()
    projections_of_what_they_reach()
    projections_of_what_they_reach()  # idempotent
    # moto's own projection fails on any item with a binary set (its whole-item conversion cannot decode
    # one), so the item here has none; the fast one fails only where a path reaches one.
    attributes = {key: value for key, value in ITEM["M"].items() if key != "blobs"}
    item = Item(DynamoType(attributes["user_id"]), DynamoType(attributes["timestamp"]), attributes)
    for paths in ([["user_id"], ["timestamp"]],
                  [["results", "vocal_markers"], ["results", "answers"]],
                  [["results", "vocal_markers", "speech_rate", "baseline", "figures"], ["evidence"]],
                  [["results", "missing", "x"], ["nothing"], ["results", "answers", "items"]],
                  [["results", "answers", "items[0]", "step_id"]],  # a list index: moto's own
                  [["user_id", "deeper"]],  # through a string: moto's own
                  [["empty"], ["results", "vocal_markers", "speech_rate", "reason"]]):
        fast, moto_own = Item.project(item, paths), Item.project.moto_original(item, paths)
        assert fast.to_json() == moto_own.to_json(), paths


def test_attribute_values_taken_as_they_are_parse_as_motos_parser_parses_them():
    """local_aws.moto_internals `attribute_values_parsed_as_they_are`: a PutItem (and an UpdateItem's values)
    parsed to the same parameters as moto's own parser gives, binary attributes (which it leaves to moto) and
    values that are not in wire form (which moto's walk rejects or converts) included."""
    import json

    from botocore.model import ServiceModel
    from moto.core.parse import BaseJSONParser, JSONParser
    from moto.core.utils import get_service_model

    from local_aws.moto_internals import attribute_values_parsed_as_they_are

    attribute_values_parsed_as_they_are()
    attribute_values_parsed_as_they_are()  # idempotent
    patched = BaseJSONParser._parse_structure
    assert patched.as_they_are is True
    model: ServiceModel = get_service_model("dynamodb")
    requests = {
        "PutItem": {"TableName": "T", "Item": ITEM["M"], "ConditionExpression": "attribute_not_exists(user_id)",
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD"},
        "UpdateItem": {"TableName": "T", "Key": {"user_id": {"S": "a"}, "timestamp": {"S": "b"}},
                       "UpdateExpression": "SET m = :m, n = :n, x = :x",
                       "ExpressionAttributeValues": {":m": MARKER, ":n": {"N": 3}, ":x": {"S": "a", "N": "1"}}},
    }

    def parsed(action: str, body: dict) -> dict:
        parser = JSONParser(model.operation_model(action), map_type=dict)
        return parser.parse({"method": "POST", "values": {}, "headers": {}, "body": json.dumps(body).encode(),
                             "url_path": "/", "url_params": {}})

    for action, body in requests.items():
        fast = parsed(action, body)
        BaseJSONParser._parse_structure = patched.moto_original
        try:
            moto_own = parsed(action, body)
        finally:
            BaseJSONParser._parse_structure = patched
        assert fast == moto_own, action
    assert parsed("PutItem", requests["PutItem"])["Item"]["evidence"] == {"B": b"\x00\x01\x02"}  # moto's decode


def test_a_projected_query_without_whole_item_copies_answers_as_motos_own_and_leaves_the_items_as_they_were():
    """local_aws.moto_internals `projected_queries_without_whole_item_copies`: the same pages (limits, order,
    filters, a page cut at 1 MB, the key to go on from) as moto's own Query gives, the stored items unchanged."""
    import boto3
    from moto import mock_aws
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import Table

    from local_aws.moto_internals import (
        linear_dynamodb_item_walks,
        projected_queries_without_whole_item_copies,
    )

    linear_dynamodb_item_walks()
    projections_of_what_they_reach()
    projected_queries_without_whole_item_copies()
    projected_queries_without_whole_item_copies()  # idempotent
    patched = Table.query, Item.__deepcopy__, Item.size
    plain = {key: value for key, value in ITEM["M"].items() if key != "blobs"}
    padding = {"S": "x" * 300_000}  # four of these pass the 1 MB page limit
    key = {":u": plain["user_id"]}
    queries = [
        {"ProjectionExpression": "user_id, #t, results.vocal_markers", "ExpressionAttributeNames": {"#t": "timestamp"}},
        {"ProjectionExpression": "job_id, results.answers.items[0].step_id", "ScanIndexForward": False, "Limit": 3},
        {"ProjectionExpression": "#t, job_id", "ExpressionAttributeNames": {"#t": "timestamp"},
         "FilterExpression": "job_id <> :j", "ExpressionAttributeValues": {**key, ":j": {"S": "job-2"}}},
        {"ProjectionExpression": "job_id, padding"},  # cut at 1 MB: LastEvaluatedKey
        {},  # not projected: moto's own
    ]

    def answers() -> list:
        client = boto3.client("dynamodb", region_name="us-east-1")
        found = []
        for query in queries:
            request = {"ExpressionAttributeValues": key, **query}
            found.append(client.query(TableName="T", KeyConditionExpression="user_id = :u", **request))
        for answer in found:
            answer.pop("ResponseMetadata")
        return found

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(TableName="T", BillingMode="PAY_PER_REQUEST",
                            KeySchema=[{"AttributeName": "user_id", "KeyType": "HASH"},
                                       {"AttributeName": "timestamp", "KeyType": "RANGE"}],
                            AttributeDefinitions=[{"AttributeName": "user_id", "AttributeType": "S"},
                                                  {"AttributeName": "timestamp", "AttributeType": "S"}])
        for n in range(6):
            client.put_item(TableName="T", Item={**plain, "timestamp": {"S": f"2026-01-0{n + 1}T00:00:00.000000Z"},
                                                 "job_id": {"S": f"job-{n}"}, "padding": padding})
        stored = client.scan(TableName="T")["Items"]
        fast = answers()
        assert client.scan(TableName="T")["Items"] == stored  # the uncopied items were only read
        Table.query, Item.__deepcopy__, Item.size = (f.moto_original for f in patched)
        try:
            moto_own = answers()
        finally:
            Table.query, Item.__deepcopy__, Item.size = patched
    assert fast[3].get("LastEvaluatedKey") is not None and len(fast[3]["Items"]) == 3  # the 1 MB cut
    assert fast == moto_own

