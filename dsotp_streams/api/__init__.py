"""HTTP: the live measured-vs-estimated page (and, later, the REST API)."""
