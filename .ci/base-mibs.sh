#!/usr/bin/env bash
# Fetches the IETF base MIB modules (SNMPv2-SMI, SNMPv2-TC, SNMPv2-CONF, SNMPv2-MIB and
# the rest of net-snmp's lib/mibs) into a folder for smilint and snmptranslate to read
# mibs/SSSONECTOR-MIB.txt against: Debian ships none (they sit in non-free
# snmp-mibs-downloader). They come from the npm package net-snmp at a pinned version,
# checked against the registry's published sha512 and sha1. Never committed.
# Usage: .ci/base-mibs.sh [DIR]   (default target/base-mibs); a no-op when DIR is filled.
set -euo pipefail
# DIR is taken relative to the caller's folder, the default relative to the repository.
dir=
if [ $# -gt 0 ]; then
  dir=$(realpath -m -- "$1")
fi
cd "$(dirname "$0")/.."
dir=${dir:-target/base-mibs}

version=3.29.2
url="https://registry.npmjs.org/net-snmp/-/net-snmp-${version}.tgz"
# From https://registry.npmjs.org/net-snmp/3.29.2: dist.integrity and dist.shasum.
integrity="sha512-ZXQyrPayCUaZxkxXBvExAYjkvZsPDBYUpK8ljIzrA5a/jByYR4REr/hpbld9wJ0tCr8d/pM7pSogDC0B/syiXQ=="
shasum=931cd8a39a32d742a9a012071b1fcda10211a81b
# The modules the MIB and the tests need; their presence marks the folder complete.
needed=(SNMPv2-SMI SNMPv2-TC SNMPv2-CONF SNMPv2-MIB)

complete() {
  local m
  for m in "${needed[@]}"; do
    [ -s "$dir/$m.mib" ] || return 1
  done
}

if complete; then
  exit 0
fi

for tool in curl tar sha1sum openssl base64; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "base-mibs: $tool is missing: apt-get install -y curl tar coreutils openssl" >&2
    exit 1
  fi
done

mkdir -p "$dir"
tmp=$(mktemp -d "${dir%/}/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

curl -fsSL --retry 3 -o "$tmp/net-snmp.tgz" "$url"

got_sha1=$(sha1sum "$tmp/net-snmp.tgz" | cut -d' ' -f1)
got_sha512="sha512-$(openssl dgst -sha512 -binary "$tmp/net-snmp.tgz" | base64 -w0)"
if [ "$got_sha1" != "$shasum" ] || [ "$got_sha512" != "$integrity" ]; then
  echo "base-mibs: checksum mismatch for $url" >&2
  echo "  want sha1 $shasum, $integrity" >&2
  echo "  got  sha1 $got_sha1, $got_sha512" >&2
  exit 1
fi

tar -xzf "$tmp/net-snmp.tgz" -C "$tmp" package/lib/mibs
# Move file by file so that a concurrent run sees each module whole or not at all.
for f in "$tmp"/package/lib/mibs/*.mib; do
  mv -f "$f" "$dir/"
done

if ! complete; then
  echo "base-mibs: $url lacks one of ${needed[*]}" >&2
  exit 1
fi
echo "base-mibs: net-snmp ${version} MIBs in $dir"
