"""Who is calling and what they may see (principals, authentication, access, rate limits), and the audit trail of PHI reads and writes (see `shared`)."""
