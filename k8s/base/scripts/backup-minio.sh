# pro-backup CronJob, step 2, and the pro-restore Job: the artifact bucket's copy on the backup
# volume and/or an off-cluster bucket, pruned to the newest BACKUP_KEEP history generations
# (backup-bucket.py: backup | fetch | restore). Credentials come from the environment only.
set -eu
sh /scripts/refuse-placeholders.sh
exec python3 /scripts/backup-bucket.py "$@"
