# pro-postgres-setup Job: MLflow's databases and their owner, a login without superuser rights.
# Idempotent (re-run on every apply). Runs as PostgreSQL's superuser (libpq env PGHOST/PGUSER/
# PGPASSWORD); every value comes from the environment: no password in any process's arguments.
set -eu
sh /scripts/refuse-placeholders.sh
echo "waiting for PostgreSQL at ${PGHOST:-local socket} ..."
until pg_isready -q; do sleep 2; done
psql -v ON_ERROR_STOP=1 -q <<'SQL'
\getenv owner MLFLOW_DB_USER
\getenv password MLFLOW_DB_PASSWORD
\getenv db MLFLOW_DB_NAME
\getenv authdb MLFLOW_AUTH_DATABASE
SELECT format('CREATE ROLE %I', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner')
\gexec
ALTER ROLE :"owner" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', d, :'owner')
  FROM unnest(ARRAY[:'db', :'authdb']) AS d
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = d)
\gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', d, :'owner'),
       format('REVOKE ALL ON DATABASE %I FROM PUBLIC', d)
  FROM unnest(ARRAY[:'db', :'authdb']) AS d
\gexec
SQL
echo "databases $MLFLOW_DB_NAME and $MLFLOW_AUTH_DATABASE are owned by $MLFLOW_DB_USER (no superuser)"
