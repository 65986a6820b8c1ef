# pro-backup CronJob, step 2: mirror the artifact bucket into $BACKUP_DIR/minio/<bucket> (new and
# changed objects; objects deleted from the bucket stay in the backup). With RESTORE=1 (the
# pro-restore Job) the same mirror runs the other way: backup folder -> bucket.
set -eu
sh /scripts/refuse-placeholders.sh
# the alias `pro` from the environment (MC_HOST_<alias>), not from arguments: no key in argv
export MC_HOST_pro="${S3_ENDPOINT%%://*}://$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY@${S3_ENDPOINT#*://}"
m() { mc --config-dir /tmp/.mc --quiet "$@"; }
copy="$BACKUP_DIR/minio/$PRO_S3_BUCKET"
if [ "${RESTORE:-0}" = 1 ]; then
  m mirror --overwrite "$copy" "pro/$PRO_S3_BUCKET"
  echo "restored bucket $PRO_S3_BUCKET from $copy"
else
  mkdir -p "$copy"
  m mirror --overwrite "pro/$PRO_S3_BUCKET" "$copy"
  echo "mirrored bucket $PRO_S3_BUCKET to $copy"
fi
