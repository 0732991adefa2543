#!/bin/sh
# What the official postgres image's entrypoint does, for Debian's PostgreSQL 15 in the tests'
# stand-in image: on an empty data directory, initdb with POSTGRES_PASSWORD (scram-sha-256 over
# TCP), the scripts of /docker-entrypoint-initdb.d while only the socket listens, then the server
# in the foreground as PID 1 (it stops cleanly on SIGTERM).
set -eu
bin=/usr/lib/postgresql/15/bin
data=/var/lib/postgresql/data
user="${POSTGRES_USER:-postgres}"
# Debian's package made a cluster of its own when it was installed; the official image has none,
# and its client tools (pg_isready in the health check) would look for that one's port.
rm -rf /etc/postgresql/15 /var/lib/postgresql/15
mkdir -p "$data" /var/run/postgresql
chown -R postgres:postgres "$data" /var/run/postgresql
chmod 700 "$data"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

if [ ! -s "$data/PG_VERSION" ]; then
    password_file=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
    chown postgres "$password_file"
    as_postgres "$bin/initdb" --pgdata="$data" --username="$user" --pwfile="$password_file" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$password_file"
    echo "host all all all scram-sha-256" >> "$data/pg_hba.conf"
    as_postgres "$bin/pg_ctl" --pgdata="$data" --options="-c listen_addresses=''" --wait start
    for script in /docker-entrypoint-initdb.d/*.sh; do
        [ -e "$script" ] && PATH="$bin:$PATH" as_postgres sh "$script"
    done
    as_postgres "$bin/pg_ctl" --pgdata="$data" --mode=fast --wait stop
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups -- \
    "$bin/postgres" -D "$data" -c listen_addresses='*'
