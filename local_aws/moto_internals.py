"""Every place the local AWS server reaches past moto's public API, in one module.

moto keeps its state in Python objects with no export or import of their own, so
keeping that state on disk needs some of their insides. What is used, and why no
public API serves:

- `Queue._messages` (read): moto lists a queue's messages only through
  `Queue.messages`, which leaves out those in flight and delayed; the store must
  keep those too, with their visibility and receipt handles.
- `Key.__dict__`, its signer's `__dict__` and `Key.__new__` (KMS): a key has no
  export; its id and key material must come back exactly as they were, or what
  was encrypted under it could not be decrypted (a replayed CreateKey makes a new
  key).
- `FakeMultipart.__dict__` and `FakeMultipart.__new__` (S3): an upload in progress
  has no export, and each part is stored once, apart from its description.
- Object versions, SQS messages and DynamoDB items themselves go through public
  attributes and methods (`bucket.keys.getlist/setlist`, `bucket.multiparts`,
  `Queue.add_message`, `Queue.pending_messages`, `Queue.deleted_messages`,
  `backend.purge_queue`, `get_item`/`put_item`), pickled where they have no other form.
- `S3Backend.put_object`, `complete_multipart_upload` and `upload_part` (patched): a
  completed multipart upload sent two ObjectCreated events where S3 sends one, and a part
  or completion of an aborted upload failed with a 500 where S3 answers NoSuchUpload
  (`one_event_per_multipart_completion`).
- `DynamoType.to_regular_json`, `DynamoType.size` and `Item.project` (patched, same results):
  moto's walk over a nested item copies each level's subtree again at every level below it,
  and a projection converted the whole item, so a projected Query of a patient's results took
  seconds (`linear_dynamodb_item_walks`, `projections_of_what_they_reach`).
- `Table.query`, `Item.__deepcopy__` and `Item.size` (patched, same answers): a projected Query copied
  and sized every whole item it found (`projected_queries_without_whole_item_copies`).
- `ResponseSerializer._serialize_type_structure` and `BaseJSONParser._parse_structure` (patched, same
  output): an attribute value already in wire form is sent, and taken, as it is
  (`attribute_values_as_they_are`, `attribute_values_parsed_as_they_are`).

A moto upgrade that renames one of these fails the durability tests
(tests/faults/test_durable_aws.py), which restart the server over every kind of state.
"""

from __future__ import annotations

import pickle
from typing import Any


def all_messages(queue: Any) -> list[Any]:
    """Every message of a moto queue, visible, in flight or delayed (copied: requests run in threads)."""
    return list(queue._messages)


def restore_message(queue: Any, message: Any, pending: bool) -> None:
    """Put a stored message back into its queue, in flight again if it was."""
    queue.add_message(message)
    if pending:
        queue.pending_messages.add(message)


def empty_queue(backend: Any, queue: Any) -> None:
    """Drop a queue's messages (PurgeQueue), leaving when it was last purged as it was."""
    last_purged_at = queue.last_purged_at
    backend.purge_queue(queue.name)
    queue.last_purged_at = last_purged_at


def upload_description(upload: Any) -> dict[str, Any]:
    """A multipart upload in progress without its parts (they are stored one by one)."""
    return {name: value for name, value in upload.__dict__.items() if name != "parts"}


def restored_upload(description: dict[str, Any], parts: dict[int, Any]) -> Any:
    from moto.s3.models import FakeMultipart

    upload = FakeMultipart.__new__(FakeMultipart)
    upload.__dict__.update(description)
    upload.parts = parts
    return upload


def dump_kms_key(key: Any, backend: Any) -> bytes:
    """A moto KMS key as bytes: its attributes, its private key as PKCS#8 (the
    cryptography object does not pickle) and its tags."""
    from cryptography.hazmat.primitives import serialization

    state = dict(key.__dict__)
    signer = state.pop("private_key", None)
    private = None
    if signer is not None:
        inner = dict(signer.__dict__)
        pem = inner.pop("private_key").private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())
        private = (type(signer).__module__, type(signer).__qualname__, inner, pem)
    tags = backend.tagger.list_tags_for_resource(key.id).get("Tags", [])
    return pickle.dumps({"key": state, "private": private, "tags": tags})


def load_kms_key(blob: bytes, backend: Any) -> Any:
    import importlib

    from cryptography.hazmat.primitives import serialization
    from moto.kms.models import Key

    data = pickle.loads(blob)
    key = Key.__new__(Key)
    key.__dict__.update(data["key"])
    if data["private"] is not None:
        module, name, inner, pem = data["private"]
        signer_class = getattr(importlib.import_module(module), name)
        signer = signer_class.__new__(signer_class)
        signer.__dict__.update(inner)
        signer.private_key = serialization.load_pem_private_key(pem, password=None)
        key.private_key = signer
    if data["tags"]:
        backend.tagger.tag_resource(key.id, data["tags"])
    return key


def backends(backend_dict: Any) -> list[tuple[str, str, Any]]:
    """(account, region, backend) for every backend moto has made, copied first:
    another request may be adding one."""
    return [(account, region, backend) for account, regions in list(backend_dict.items())
            for region, backend in list(regions.items())]


def one_event_per_multipart_completion() -> None:
    """Make CompleteMultipartUpload send the one ObjectCreated event S3 sends.

    moto 5 stores the completed object through `S3Backend.put_object`, which sends
    `ObjectCreated:Put`, and then sends `ObjectCreated:CompleteMultipartUpload`: ingest
    got two notifications for every recording the upload proxy wrote. No setting turns
    the first off, so the inner put is told `disable_notification` while a completion
    runs (a thread-local flag: moto serves requests on threads). A part or completion of an
    upload moto no longer knows answers NoSuchUpload, as S3 does (`_known_upload`). Idempotent."""
    import threading

    from moto.s3.models import S3Backend

    if getattr(S3Backend.complete_multipart_upload, "one_event", False):
        return
    completing = threading.local()
    put_object, complete, upload_part = S3Backend.put_object, S3Backend.complete_multipart_upload, S3Backend.upload_part

    def quiet_put_object(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(completing, "active", False):
            kwargs["disable_notification"] = True
        return put_object(self, *args, **kwargs)

    def complete_with_one_event(self: Any, bucket_name: str, multipart_id: str, *args: Any, **kwargs: Any) -> Any:
        _known_upload(self, bucket_name, multipart_id)
        completing.active = True
        try:
            return complete(self, bucket_name, multipart_id, *args, **kwargs)
        finally:
            completing.active = False

    def upload_known_part(self: Any, bucket_name: str, multipart_id: str, *args: Any, **kwargs: Any) -> Any:
        _known_upload(self, bucket_name, multipart_id)
        return upload_part(self, bucket_name, multipart_id, *args, **kwargs)

    complete_with_one_event.one_event = True  # type: ignore[attr-defined]
    S3Backend.put_object = quiet_put_object
    S3Backend.complete_multipart_upload = complete_with_one_event
    S3Backend.upload_part = upload_known_part


def _known_upload(backend: Any, bucket_name: str, multipart_id: str) -> None:
    """NoSuchUpload, S3's answer for a part or a completion of an aborted or completed upload (moto's is a
    KeyError, a 500 that clients retry): the upload proxy's takeover of an abandoned upload relies on the old
    request failing so (docs/uploads.md)."""
    from moto.s3.exceptions import NoSuchUpload

    if multipart_id not in backend.get_bucket(bucket_name).multiparts:
        raise NoSuchUpload(multipart_id)


def linear_dynamodb_item_walks() -> None:
    """Make moto's walks over a DynamoDB item take time in proportion to its size.

    `DynamoType.to_regular_json` (every projected read: Query, Scan and GetItem with a
    ProjectionExpression) deep-copies a map or list and then converts each child, which deep-copies
    that child's subtree again: a value at depth d is copied d times. `DynamoType.size` (every item a
    Query or Scan passes, for the 1 MB page limit) wraps each map child in a new `DynamoType`, which
    re-wraps its whole subtree, at every level. A stored check-in result nests 6-8 levels deep (answers,
    their markers, the baseline blocks), so a Query of 11 of them took seconds. These do the same walk
    once, with the same results (tests/unit/test_local_aws_walks.py compares them with moto's own).
    Idempotent."""
    import base64
    import copy

    from moto.dynamodb.models.dynamo_type import DynamoType, bytesize

    if getattr(DynamoType.to_regular_json, "linear", False):
        return
    originals = DynamoType.to_regular_json, DynamoType.size

    def to_regular_json(self: Any) -> dict[str, Any]:
        value = self.value
        if isinstance(value, dict):
            value = {key: item.to_regular_json() if isinstance(item, DynamoType) else copy.deepcopy(item)
                     for key, item in value.items()}
        elif isinstance(value, list):
            value = [item.to_regular_json() if isinstance(item, DynamoType) else copy.deepcopy(item) for item in value]
        elif not isinstance(value, _IMMUTABLE):  # a set's list of strings
            value = copy.deepcopy(value)
        if self.is_binary() and isinstance(value, str):
            value = base64.b64decode(value)
        return {self.type: value}

    def size(self: Any) -> int:
        if self.is_number():
            return len(str(self.value))
        if self.is_set():
            return sum(DynamoType({self.type[0]: v}).size() for v in self.value)
        if self.is_list():
            return sum(_size(v) for v in self.value)
        if self.is_map():
            return sum(bytesize(k) + _size(v) for k, v in self.value.items())
        if isinstance(self.value, bool):
            return 1
        return bytesize(self.value)

    def _size(value: Any) -> int:  # moto's map branch wraps children that are not DynamoType yet
        return value.size() if isinstance(value, DynamoType) else DynamoType(value).size()

    _IMMUTABLE = (str, bytes, bool, int, float, type(None))  # a string, number or boolean value: nothing to copy
    to_regular_json.linear = True  # type: ignore[attr-defined]
    to_regular_json.moto_original, size.moto_original = originals  # type: ignore[attr-defined]
    DynamoType.to_regular_json = to_regular_json
    DynamoType.size = size


def projections_of_what_they_reach() -> None:
    """Make a DynamoDB projection convert only the attributes its paths reach.

    moto's `Item.project` converts the whole item to plain values (and copies it) before picking the
    paths: for `results.compliance.verification_status` of a stored check-in result, its 30-80 KB. This
    converts only the values the paths name, with moto's own helpers, so the result is the same
    (tests/unit/test_local_aws_walks.py); a path with a list index, or through a value that is not a
    map, is left to moto's own. Idempotent."""
    from moto.dynamodb.models.dynamo_type import (  # the helpers moto's own Item.project uses
        DynamoType,
        Item,
        deserializer,
        merge_dicts,
        serializer,
    )

    if getattr(Item.project, "moto_original", None):
        return
    original_project = Item.project

    def project(self: Any, projection_expressions: list[list[str]]) -> Any:
        """moto's projection, converting only the attributes the paths reach (moto converts the whole item
        to plain values first); a path with a list index, or through a value that is not a map, is left to
        moto's own."""
        result: dict[str, Any] = {}
        for path in projection_expressions:
            found = _found_at(path, self.attrs)
            if found is None:
                return original_project(self, projection_expressions)
            merge_dicts(result, found)
        return Item(hash_key=self.hash_key, range_key=self.range_key, attrs=serializer.serialize(result)["M"])

    def _found_at(path: list[str], attributes: dict[str, Any]) -> dict[str, Any] | None:
        """What moto's `find_nested_key` gives for `path` ({} where a name is missing), or None for a path it
        should take."""
        values, node = attributes, None
        for name in path:
            if "[" in name or not isinstance(values, dict):
                return None
            if name not in values:
                return {}
            node = values[name]
            values = node.value if isinstance(node, DynamoType) and node.is_map() else None
        found: dict[str, Any] = {path[-1]: deserializer.deserialize(node.to_regular_json())}
        for name in reversed(path[:-1]):
            found = {name: found}
        return found

    project.moto_original = original_project  # type: ignore[attr-defined]
    Item.project = project


def projected_queries_without_whole_item_copies() -> None:
    """Make a projected Query copy only what it sends back, and size each item once.

    moto's `Table.query` deep-copies every item it found, whole, before projecting them (the projection
    makes new values of what it picks, so the copy protects nothing then), and takes each item's size twice
    (once for the 1 MB page limit, once to add it up). The alert rules' Query of a patient's results (each
    30-80 KB) spent nearly all of its server time in those two walks over whole items, while every other
    DynamoDB request waited for its lock. For a projected Query on the table (not an index) the items
    are passed on uncopied (a filter reads them, the projection copies what it picks) and each item's size is
    taken once for that request; any other Query is moto's own
    (tests/unit/test_local_aws_walks.py compares the answers). Idempotent."""
    import threading

    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import Table

    if getattr(Table.query, "moto_original", None):
        return
    original_query, original_deepcopy, original_size = Table.query, Item.__deepcopy__, Item.size
    projecting = threading.local()  # set while this thread runs a projected Query

    def query(self: Any, hash_key: Any, range_comparison: Any, range_objs: Any, limit: Any, exclusive_start_key: Any,
              scan_index_forward: Any, projection_expressions: Any, index_name: Any = None,
              consistent_read: bool = False, filter_expression: Any = None, **rest: Any) -> Any:
        arguments = (hash_key, range_comparison, range_objs, limit, exclusive_start_key, scan_index_forward,
                     projection_expressions, index_name, consistent_read, filter_expression)
        if not projection_expressions or index_name:
            return original_query(self, *arguments, **rest)
        projecting.sizes = {}
        try:
            return original_query(self, *arguments, **rest)
        finally:
            projecting.sizes = None

    def deepcopy_unless_projected(self: Any, memo: dict[int, Any]) -> Any:
        return self if getattr(projecting, "sizes", None) is not None else original_deepcopy(self, memo)

    def size_once_per_query(self: Any) -> int:
        sizes = getattr(projecting, "sizes", None)
        if sizes is None:
            return original_size(self)
        if id(self) not in sizes:  # the items stay alive (in the table) while the query runs: ids are theirs
            sizes[id(self)] = original_size(self)
        return sizes[id(self)]

    query.moto_original = original_query  # type: ignore[attr-defined]
    deepcopy_unless_projected.moto_original = original_deepcopy  # type: ignore[attr-defined]
    size_once_per_query.moto_original = original_size  # type: ignore[attr-defined]
    Table.query = query
    Item.__deepcopy__ = deepcopy_unless_projected
    Item.size = size_once_per_query


def attribute_values_as_they_are() -> None:
    """Send a DynamoDB attribute value that is already in its wire form as it is.

    moto's response serializer (moto.core.serialize) walks every node of every item it sends back
    against the API's shapes, looking each member up under several candidate names: most of the
    seconds of a Query of a patient's results (a stored result is thousands of nodes) went there. An
    `AttributeValue` made of strings, booleans, lists and maps only (no binary: blobs are base64-encoded
    on the way out) serialises to itself, so it is sent as it is; any other goes through moto's walk
    (tests/unit/test_local_aws_walks.py compares the two on nested items). Idempotent."""
    from moto.core.serialize import ResponseSerializer

    if getattr(ResponseSerializer._serialize_type_structure, "as_they_are", False):
        return
    original = ResponseSerializer._serialize_type_structure

    def serialize_structure(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if key and shape.name == "AttributeValue" and _wire_form(value):
            serialized[self.get_serialized_name(shape, key)] = value
            return
        original(self, serialized, value, shape, key)

    serialize_structure.as_they_are = True  # type: ignore[attr-defined]
    serialize_structure.moto_original = original  # type: ignore[attr-defined]
    ResponseSerializer._serialize_type_structure = serialize_structure


def attribute_values_parsed_as_they_are() -> None:
    """Take a DynamoDB attribute value that arrives in its wire form as it is.

    moto's request parser (moto.core.parse) walks every node of a request against the API's shapes, as its
    response serializer does on the way out (`attribute_values_as_they_are`): the PutItem of a stored check-in
    result (30-80 KB, thousands of nodes) spent most of its server time there. An `AttributeValue` made of
    strings, booleans, lists and maps only (no binary: blobs are base64-decoded on the way in) parses to a copy
    of itself, so it is taken as it is; any other goes through moto's walk (tests/unit/test_local_aws_walks.py
    compares the two on nested items). Idempotent."""
    from moto.core.parse import BaseJSONParser

    if getattr(BaseJSONParser._parse_structure, "as_they_are", False):
        return
    original = BaseJSONParser._parse_structure

    def parse_structure(self: Any, shape: Any, value: Any) -> Any:
        if shape.name == "AttributeValue" and _wire_form(value):
            return value
        return original(self, shape, value)

    parse_structure.as_they_are = True  # type: ignore[attr-defined]
    parse_structure.moto_original = original  # type: ignore[attr-defined]
    BaseJSONParser._parse_structure = parse_structure


_STRINGS = frozenset({"S", "N"})
_STRING_LISTS = frozenset({"SS", "NS"})
_BOOLEANS = frozenset({"BOOL", "NULL"})


def _wire_form(value: Any) -> bool:
    """An attribute value as DynamoDB's JSON carries it, with no binary anywhere in it."""
    if type(value) is not dict or len(value) != 1:
        return False
    (tag, inner), = value.items()
    if tag in _STRINGS:
        return type(inner) is str
    if tag in _BOOLEANS:
        return type(inner) is bool
    if tag == "M":
        return type(inner) is dict and all(type(k) is str and _wire_form(v) for k, v in inner.items())
    if tag == "L":
        return type(inner) is list and all(_wire_form(v) for v in inner)
    if tag in _STRING_LISTS:
        return type(inner) is list and all(type(v) is str for v in inner)
    return False
