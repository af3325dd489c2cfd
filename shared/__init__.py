"""SchizoDot's common library, in four layers (a module imports only its own layer and those below):

- `shared.domain`: the vocabulary of a check-in and its job (identifiers, options, timeline, the job
  record, markers, clinics, errors), plain values with no I/O;
- `shared.aws`: the adapters to AWS (clients, the job store, object storage, the patient history,
  the resources' definitions) and their in-memory fakes;
- `shared.runtime`: what runs a stage (events and topology, the queue consumer, the stage runner,
  the worker process, logs, traces, metrics, settings, media probing, HTTP helpers);
- `shared.identity`: who is calling and what they may see (principals, authentication, access,
  rate limits) and the audit trail of every read and write of PHI.
"""
