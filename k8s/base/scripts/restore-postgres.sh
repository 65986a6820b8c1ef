# pro-restore Job (docs/deploy.md, "Restore"): load the dumps of $BACKUP_ID (a folder name under
# $BACKUP_DIR/postgres; `latest` = the newest) back into MLflow's databases, replacing what is
# there, as the databases' owner. Stop MLflow first (kubectl -n pro scale deploy/mlflow --replicas=0).
set -eu
sh /scripts/refuse-placeholders.sh
id="${BACKUP_ID:-latest}"
if [ "$id" = latest ]; then
  id=$(ls -1d "$BACKUP_DIR"/postgres/*Z | sort | tail -n 1)
  id=${id##*/}
fi
src="$BACKUP_DIR/postgres/$id"
[ -d "$src" ] || { echo "no backup $src (ls $BACKUP_DIR/postgres)" >&2; exit 1; }
until pg_isready -q; do sleep 2; done
for db in "$PGDATABASE" "$MLFLOW_AUTH_DATABASE"; do
  pg_restore --clean --if-exists --no-owner --no-acl --exit-on-error --single-transaction \
    --dbname="$db" "$src/$db.dump"
done
echo "restored $PGDATABASE and $MLFLOW_AUTH_DATABASE from $src"
