"""moto's AWS-API server with its state kept on disk: the embedded stack's (and
compose's) local AWS survives a restart, a SIGKILL and a reboot.

    python -m local_aws -H 127.0.0.1 -p 4566 --data-dir .stack-data/aws

It is for one machine: it listens on loopback unless told otherwise, answers only
requests signed with its own secret, and serves no /moto-api (`guard.py`). The
production data path is AWS itself.

Why this and not moto's recorder or another server: see docs/operations.md,
"Durable embedded data". In short, the store holds the *current state* of every
entity a request touched (an after-image), never the requests themselves, so
a restart costs time in proportion to what is stored, not to history, and
nothing random is replayed: SQS message ids and receipt handles, S3 ETags and
DynamoDB items come back exactly as they were.

- DynamoDB: after a write that succeeded, the items it named (PutItem,
  UpdateItem, DeleteItem, BatchWriteItem, TransactWriteItems) are read back
  from moto and stored as DynamoDB JSON, or removed.
- SQS: after any request that may change messages (sends, receives, deletes,
  visibility changes, purges, and S3 notifications or SNS fan-out, which moto
  delivers internally), every queue is compared with what is stored and the
  messages that changed are stored with their receive count, visibility,
  receipt handles and DLQ moves. Visibility times are wall-clock, so messages
  in flight when the server stopped are redelivered when their timeout lapses,
  and a worker that outlived the restart can still delete with its receipt handle.
- S3: after a write to an object, that object (all its versions, moto's own
  pickled form) is stored or removed; multipart uploads in progress are kept
  too (each upload's description and each part once), so an upload resumes
  from ListParts after a restart.
- KMS: after a request that changes keys or aliases, every key of that
  account and region (its id, key material, rotation, aliases and tags) is
  stored, and put back before anything else: a replayed CreateKey would make
  a key with a new id and new material, orphaning what names the old one.
- Everything else that changes state (creating tables, queues, buckets, their
  attributes, notifications) is kept as the request itself and replayed at
  start-up, in order, before the data is put back; a repeated identical request
  replaces its earlier copy, so the log stays small (a request that then fails
  for want of what a later one makes is replayed again after the rest). The
  headers that shape such a request (`x-amz-bucket-object-lock-enabled`, say)
  are kept with it.

The response is sent only after the change is committed to SQLite (WAL,
`synchronous=FULL` by default: each commit is fsynced, so a power cut loses
nothing acknowledged; `--sync normal` survives process crashes only).
Only the standard library and moto (with cryptography, its dependency) are
imported: compose runs this package in moto's own image.

The modules: `request` (what a request is), `guard` (the checks AWS makes and
moto does not), `store` (the SQLite store and moving state between it and moto),
`moto_internals` (every use of moto's private state, and why each is needed),
`app` (the WSGI app and the command).
"""
