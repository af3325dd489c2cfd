"""What runs a stage: CloudEvents and the topology, the SQS consumer, the stage runner, the worker process, logs, traces, metrics, settings, media probing and HTTP helpers (see `shared`)."""
