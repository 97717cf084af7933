-- Run once by the postgres image when its volume is first initialised (docker-entrypoint-initdb.d).
-- POSTGRES_DB (mlflow) is created by the image itself; Prefect gets a database of its own: both servers
-- migrate their schema with alembic and would clash on one `alembic_version` table.
CREATE DATABASE prefect;
