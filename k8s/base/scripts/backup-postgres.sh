# pro-backup CronJob, step 1: dump MLflow's two databases (tracking + registry, auth users) into
# $BACKUP_DIR/postgres/<UTC time>/<database>.dump (pg_dump custom format), as the databases'
# owner (libpq env PGHOST/PGUSER/PGPASSWORD), and keep the newest $BACKUP_KEEP dumps.
set -eu
sh /scripts/refuse-placeholders.sh
stamp=$(date -u +%Y%m%dT%H%M%SZ)
dest="$BACKUP_DIR/postgres/$stamp"
mkdir -p "$dest.partial"
for db in "$PGDATABASE" "$MLFLOW_AUTH_DATABASE"; do
  pg_dump --format=custom --no-owner --no-acl --dbname="$db" --file="$dest.partial/$db.dump"
done
mv "$dest.partial" "$dest"   # a dump folder without .partial is complete
echo "dumped $PGDATABASE and $MLFLOW_AUTH_DATABASE to $dest"
ls -1d "$BACKUP_DIR"/postgres/*Z | sort | head -n -"${BACKUP_KEEP:-7}" | xargs -r rm -rf
