-- Second database in the production Postgres (docker-compose.yml): Label Studio's.
-- The first one (prefect) is created from POSTGRES_DB.
CREATE DATABASE labelstudio;
