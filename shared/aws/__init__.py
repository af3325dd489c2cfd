"""Adapters to AWS (clients, DynamoDB values, the job store, S3 storage, the patient history, resource definitions) and their in-memory fakes (see `shared`)."""
