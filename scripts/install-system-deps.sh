#!/bin/sh
# The system packages the embedded stack and the tests need, installed only where missing:
# Debian's redis-server (the head-tag cache). Called by `make system-deps`; safe to run again.
# As root it calls apt-get directly, otherwise through sudo. `env` carries DEBIAN_FRONTEND through
# sudo, and keeps the assignment an argument rather than a word the shell would run as a command.
set -eu

if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
echo "installing redis-server (Debian package)"
if [ "$(id -u)" = 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1; then
  as_root="sudo"
else
  echo "redis-server is missing and this user is not root and has no sudo:" >&2
  echo "  install it (apt-get install -y redis-server) or set QU_REDIS_URL to a running Redis" >&2
  exit 1
fi
$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
# apt-get's own exit status is the install's verdict (set -e stops on a failed install). A redis-server that
# is still not on PATH afterwards (a PATH without /usr/bin, say) is said here, and the stack's start and the
# tests then stop with their own error naming the binary and QU_REDIS_URL.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "warning: apt-get installed redis-server but it is not on PATH ($PATH): put /usr/bin on PATH," >&2
  echo "  or set QU_REDIS_URL to a running Redis" >&2
fi
