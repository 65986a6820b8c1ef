#!/usr/bin/env bash
# checkov over every rendered folder of k8s/ and the Dockerfiles, with the commented skip list in
# k8s/checkov.yaml; prints passed/failed counts per folder and exits 1 on any failed check.
#   scripts/checkov.sh                  # checkov from PATH (pip install checkov; CI: .ci/run)
#   CHECKOV=/path/to/checkov scripts/checkov.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CHECKOV=${CHECKOV:-checkov}
PYTHON=${PYTHON:-python3}
if ! command -v "$CHECKOV" >/dev/null 2>&1; then
  echo "error: checkov not found; pip install checkov (in its own venv), or set CHECKOV" >&2
  exit 2
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
folders="k8s k8s/overlays/local k8s/overlays/gpu k8s/overlays/gpu-trainer k8s/overlays/existing-kfp k8s/namespace k8s/overlays/local/namespace k8s/overlays/gpu/namespace k8s/restore"
status=0
report() {  # report <name> <checkov args...>
  local name=$1; shift
  local json="$out/$name.json"
  # stderr to a file: offline, checkov logs a traceback per run for its guidelines download
  "$CHECKOV" --config-file k8s/checkov.yaml --quiet -o json "$@" > "$json" 2> "$out/$name.err" || true
  "$PYTHON" - "$name" "$json" <<'PY' || status=1
import json, sys
name, path = sys.argv[1], sys.argv[2]
try:
    data = json.load(open(path))
except ValueError:
    sys.exit(f"{name}: checkov produced no report:\n" + open(path[:-5] + ".err").read()[-3000:])
reports = data if isinstance(data, list) else [data]
passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
failed = [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]
skipped = sum(r.get("summary", {}).get("skipped", 0) for r in reports)
print(f"{name:<28} passed {passed:>4}  failed {len(failed):>3}  skipped {skipped:>3}")
for c in failed:
    print(f"    FAILED {c['check_id']} {c['check_name']}: {c.get('resource')} ({c.get('file_path')})")
sys.exit(1 if failed else 0)
PY
}
for folder in $folders; do
  name=$(echo "$folder" | tr / -)
  "$PYTHON" scripts/kubectl.py kustomize "$folder" > "$out/$name.yaml"
  mkdir -p "$out/$name"
  mv "$out/$name.yaml" "$out/$name/"
  # the restore Job runs beside the platform (its NetworkPolicies come from there)
  if [[ "$folder" == k8s/restore ]]; then cp "$out/k8s/k8s.yaml" "$out/$name/"; fi
  report "$name" -d "$out/$name" --framework kubernetes
done
report docker -d docker --framework dockerfile
exit $status
