"""The PostgreSQL wire relay (its listener is app.relay.postgres.listener)."""
