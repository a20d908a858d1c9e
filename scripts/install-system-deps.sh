#!/bin/sh
# The system packages the embedded stack and the tests need, installed only where missing. Each argument is
# COMMAND=PACKAGE (a Debian package providing that command); with none, redis-server (the head-tag cache).
# `make system-deps` asks for what `make run` needs; `make test-deps` adds Debian's chromium, which the
# replay report's browser test drives headless. Safe to run again.
# As root it calls apt-get directly, otherwise through sudo. `env` carries DEBIAN_FRONTEND through
# sudo, and keeps the assignment an argument rather than a word the shell would run as a command.
set -eu

[ "$#" -gt 0 ] || set -- redis-server=redis-server
missing=""
for wanted in "$@"; do
  command_name=${wanted%%=*}
  package=${wanted#*=}
  command -v "$command_name" >/dev/null 2>&1 || missing="$missing $package"
done
[ -n "$missing" ] || exit 0

echo "installing$missing (Debian packages)"
if [ "$(id -u)" = 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1; then
  as_root="sudo"
else
  echo "missing:$missing, and this user is not root and has no sudo:" >&2
  echo "  install them (apt-get install -y$missing); for redis-server, QU_REDIS_URL may name a running Redis" >&2
  exit 1
fi
$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086 # one word per package
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
# apt-get's own exit status is the install's verdict (set -e stops on a failed install). A command that is still
# not on PATH afterwards (a PATH without /usr/bin, say) is said here; what needs it then stops with its own error.
for wanted in "$@"; do
  command_name=${wanted%%=*}
  if ! command -v "$command_name" >/dev/null 2>&1; then
    echo "warning: apt-get installed ${wanted#*=} but $command_name is not on PATH ($PATH): put /usr/bin on PATH" >&2
    [ "$command_name" != redis-server ] || echo "  or set QU_REDIS_URL to a running Redis" >&2
  fi
done
