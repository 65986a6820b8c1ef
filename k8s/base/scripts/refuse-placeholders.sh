# Fail closed: exit 1 while any environment variable holds a CHANGE_ME placeholder (the secrets
# in the repository are placeholders; docs/deploy.md, "Replace the secrets"). POSIX sh only:
# runs in every image of the platform. Names the variable, never prints its value.
export -p | while IFS= read -r line; do
  case "$line" in
    *=*CHANGE_ME*)
      echo "refusing to start: ${line%%=*} is a CHANGE_ME placeholder; replace the secrets (docs/deploy.md)" >&2
      exit 1 ;;
  esac
done
