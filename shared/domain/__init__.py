"""The vocabulary of a check-in and its job: plain values and rules, no I/O (see `shared`)."""
