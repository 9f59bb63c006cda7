#!/usr/bin/env bash
# Installs the system parts the gateway and its tests need, when they are missing:
# libmagic (python-magic), Debian's Chromium (browser tests), Dovecot (IMAP tests; its openssl
# dependency makes the test certificate), swaks (README examples), wrk (web benchmark), and makes
# sure the local PostgreSQL the tests use is running. Safe to run again.
set -euo pipefail

need=()
[ -e /usr/lib/x86_64-linux-gnu/libmagic.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libmagic.so.1 ] || need+=(libmagic1)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/sbin/dovecot ] || command -v dovecot >/dev/null 2>&1 || need+=(dovecot-imapd)
command -v swaks >/dev/null 2>&1 || need+=(swaks)
command -v wrk >/dev/null 2>&1 || need+=(wrk)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "installing system packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# PostgreSQL: the tests use 127.0.0.1:5432, database test. Start the cluster if it is stopped.
if command -v pg_lsclusters >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  version=$(ls /etc/postgresql 2>/dev/null | head -n 1)
  if [ -n "$version" ] && ! pg_lsclusters 2>/dev/null | grep -q online; then
    echo "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
fi
