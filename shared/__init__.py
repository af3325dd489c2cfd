"""SchizoDot's common library, in layers: a module imports only from its own layer and those listed before it.

- `shared.domain`: the vocabulary of a check-in and its job (identifiers, options, timeline, the job
  record, markers, clinics, errors), plain values with no I/O;
- `shared.settings`: the settings every service shares (`CommonSettings`);
- `shared.aws`: the adapters to AWS (clients, the job store, object storage, the patient history,
  labelled pill frames);
- `shared.identity`: who is calling and what they may see (principals, tokens, API keys and patient
  links, the authenticator and its middleware, access, rate limits) and the audit trail of PHI;
- `shared.runtime`: what runs a stage (events and topology, the queue consumer, the stage runner, the
  worker process, the AWS resources' definitions, logs, traces, metrics, media probing, HTTP helpers);
- `shared.fakes`: in-memory adapters and a pipeline driver for tests, over every layer.

tests/unit/test_layers.py holds the code to this order.
"""
