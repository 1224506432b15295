#!/usr/bin/env python3
"""Unpacks Debian bookworm-backports' Valkey 8 server into DIR (default .tools/valkey8).

The package is found through the suite's Packages index, checked against the SHA256
the index gives, and unpacked with dpkg-deb: nothing is installed system-wide, so Redis 7 from
bookworm and its redis-cli stay as they are. Debian ships the server as valkey-check-rdb, which
acts as the server when called by the name valkey-server, hence the link.
"""
import hashlib
import lzma
import os
import subprocess
import sys
import tempfile
import urllib.request

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm-backports"
PACKAGE = "valkey-tools"


def package_entry():
    url = f"{MIRROR}/dists/{SUITE}/main/binary-amd64/Packages.xz"
    with urllib.request.urlopen(url, timeout=60) as response:
        index = lzma.decompress(response.read()).decode()
    for stanza in index.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" ")
        )
        if fields.get("Package") == PACKAGE:
            return fields
    sys.exit(f"fetch-valkey8: {PACKAGE} is not in {SUITE}")


def main():
    target = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".tools/valkey8")
    entry = package_entry()
    with urllib.request.urlopen(f"{MIRROR}/{entry['Filename']}", timeout=120) as response:
        deb = response.read()
    if hashlib.sha256(deb).hexdigest() != entry["SHA256"]:
        sys.exit(f"fetch-valkey8: {entry['Filename']} does not match the index's SHA256")
    with tempfile.NamedTemporaryFile(suffix=".deb") as file:
        file.write(deb)
        file.flush()
        subprocess.run(["dpkg-deb", "-x", file.name, target], check=True)
    server = os.path.join(target, "usr/bin/valkey-server")
    if not os.path.lexists(server):
        os.symlink("valkey-check-rdb", server)
    version = subprocess.run([server, "--version"], check=True, capture_output=True, text=True)
    print(f"fetch-valkey8: {entry['Version']}: {version.stdout.strip()}")


if __name__ == "__main__":
    main()
