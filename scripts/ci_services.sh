#!/usr/bin/env bash
# Start the services the platform tests use beyond loopback mlflow/moto: a real PostgreSQL on
# 127.0.0.1 with a database and user for MLflow's backend store. Also installs (never starts) nginx
# and htpasswd (apache2-utils): tests/k8s/test_ui_auth.py runs the explorer's login proxy config.
#
#   eval "$(scripts/ci_services.sh)"        # starts PostgreSQL, exports PRO_TEST_POSTGRES_URI
#   scripts/ci_services.sh stop             # stops it
#
# stdout carries only `export ...` lines (so eval works); progress goes to stderr. The URI is also
# written to $PRO_CI_DIR/env. Installs PostgreSQL with apt-get when it is missing (needs root).
# Tests that need it (tests/test_registry.py::test_promotion_with_postgres_backend) skip when
# PRO_TEST_POSTGRES_URI is unset.
set -euo pipefail

PORT="${PRO_CI_PG_PORT:-55432}"
DIR="${PRO_CI_DIR:-/tmp/pro-ci-services}"
DB="${PRO_CI_PG_DB:-mlflow}"
USER_NAME="${PRO_CI_PG_USER:-pro}"
PASSWORD="${PRO_CI_PG_PASSWORD:-pro-ci-password}"
DATA="$DIR/pgdata"
say() { echo "ci_services: $*" >&2; }

pg_bin() {
  local b
  for b in /usr/lib/postgresql/*/bin; do [ -x "$b/initdb" ] && { echo "$b"; return; }; done
  command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)" && return
  return 1
}

as_pg() {  # run a command as the unprivileged owner of the cluster
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

BIN="$(pg_bin || true)"
if [ "${1:-start}" = stop ]; then
  [ -n "$BIN" ] && [ -d "$DATA" ] && as_pg "$BIN/pg_ctl" -D "$DATA" -m fast stop >&2 || true
  exit 0
fi

missing=()
[ -n "$BIN" ] || missing+=(postgresql)
{ command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null 2>&1 || missing+=(nginx)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} (apt-get; nginx is not started)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # no service starts on install (Debian's policy-rc.d convention), unless one already decides
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy=1
  fi
  apt-get install -y -qq "${missing[@]}" >&2
  if [ -n "$policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  BIN="$(pg_bin)"
fi

mkdir -p "$DIR"
if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; fi
if [ ! -f "$DATA/PG_VERSION" ]; then
  say "initdb in $DATA"
  as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 >/dev/null
fi
if ! as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  say "starting PostgreSQL on 127.0.0.1:$PORT"
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DIR/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR" start >&2
fi

psql_pg() { as_pg "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_pg -c "select 1 from pg_roles where rolname='$USER_NAME'")" != 1 ]; then
  psql_pg -c "create role \"$USER_NAME\" login password '$PASSWORD'"
fi
if [ "$(psql_pg -c "select 1 from pg_database where datname='$DB'")" != 1 ]; then
  psql_pg -c "create database \"$DB\" owner \"$USER_NAME\""
fi

URI="postgresql+psycopg2://$USER_NAME:$PASSWORD@127.0.0.1:$PORT/$DB"
echo "export PRO_TEST_POSTGRES_URI='$URI'" | tee "$DIR/env"
say "PostgreSQL ready: $URI"
