"""The fixed POSIX ``sh`` scripts behind the remote file operations (coreutils only, no Python on hosts).

Each runs as ``sh -c SCRIPT sh ARG...``: the script text is a constant and every variable part (paths,
mode, owner) arrives as a positional argument, so nothing is ever interpolated into shell text.
"""

# $1 tmp, $2 final path, $3 directory, then install's options (-m MODE [-o OWNER] [-g GROUP]).
# GNU install creates the file O_EXCL with mode 0600 (after umask(0)), then chowns, then chmods to MODE:
# never wider than asked at any moment; umask 077 is belt and braces for other installs.
WRITE_SCRIPT = """\
umask 077
tmp=$1 dst=$2 dir=$3
shift 3
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
install "$@" -T -- /dev/stdin "$tmp" || exit
sync -- "$tmp" || exit
mv -f -T -- "$tmp" "$dst" || exit
sync -- "$dir" 2>/dev/null
exit 0
"""

# exit 100 = absent (no file, or a dangling link); anything else non-zero is a real failure
READ_SCRIPT = """\
[ -e "$1" ] || exit 100
exec cat -- "$1"
"""
ABSENT = 100

# one line per path, in order: the hex digest, or "-" when it is not a regular file
SHA256_SCRIPT = """\
for p do
  if [ -f "$p" ]; then
    h=$(sha256sum < "$p") || exit
    printf '%s\\n' "${h%% *}"
  else
    printf '%s\\n' -
  fi
done
"""

# Restore one member's data dir from a snapshot file. $1 data dir, $2 aside, $3 snapshot, $4 tool dir,
# $5 owner ("" = leave as is), then the restore options. Done already when the data dir holds a member
# and the aside exists; the current data dir is moved aside, never deleted (an empty aside dir marks a
# member that had none); the restore goes to $1.restoring and is renamed into place only when complete.
RESTORE_SCRIPT = """\
data=$1 aside=$2 snap=$3 tool=$4 owner=$5
shift 5
if [ -d "$data/member" ] && [ -e "$aside" ]; then echo "already restored"; exit 0; fi
if [ ! -e "$aside" ]; then
  if [ -e "$data" ]; then mv -T -- "$data" "$aside" || exit; else mkdir -m 0700 -- "$aside" || exit; fi
elif [ -e "$data" ]; then
  rm -rf -- "$data" || exit  # no member in it (checked above): made after the original was moved aside
fi
rm -rf -- "$data.restoring"
if [ -x "$tool/etcdutl" ]; then
  "$tool/etcdutl" snapshot restore "$snap" --data-dir "$data.restoring" "$@" >/dev/null || exit
else
  ETCDCTL_API=3 "$tool/etcdctl" snapshot restore "$snap" --data-dir "$data.restoring" "$@" >/dev/null || exit
fi
if [ -n "$owner" ]; then chown -R -- "$owner:$owner" "$data.restoring" || exit; fi
chmod 0700 -- "$data.restoring" || exit
sync
mv -T -- "$data.restoring" "$data" || exit
echo restored
"""
