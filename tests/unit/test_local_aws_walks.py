"""The local AWS server's linear walks over a DynamoDB item (local_aws.moto_internals
`linear_dynamodb_item_walks`) give exactly what moto's own give, on an item nested as a
stored check-in result is, with every attribute type."""

from __future__ import annotations

from moto.dynamodb.models.dynamo_type import DynamoType

from local_aws.moto_internals import linear_dynamodb_item_walks

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
