"""E-mail over SMTP with an outbox kept in the database (see README.md)."""
