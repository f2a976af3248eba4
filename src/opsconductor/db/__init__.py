"""PostgreSQL layer: embedded server, connection pool, migrations and the SQL of each concern."""
