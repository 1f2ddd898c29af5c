#!/usr/bin/env bash
# One entry point for a fresh Debian machine (run as root, or with sudo available):
#   ./setup.sh demo   install what is missing, then run the demo
#   ./setup.sh test   install what is missing, then lint, type-check and run every test
# It is idempotent: a second run installs nothing and goes straight to the work.
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the product and its tests drive for real. Binary -> package.
declare -A DEBIAN_PACKAGES=(
    [mosquitto]=mosquitto
    [mosquitto_passwd]=mosquitto
    [mosquitto_pub]=mosquitto-clients
    [mosquitto_sub]=mosquitto-clients
    [sigtool]=clamav
    [clamscan]=clamav
    [victoria-metrics]=victoria-metrics
    [influxd]=influxdb
    [prometheus-node-exporter]=prometheus-node-exporter
    [promtool]=prometheus
    [chromium]=chromium
    [pdftoppm]=poppler-utils
    [pdftotext]=poppler-utils
    [openssl]=openssl
    [ip]=iproute2
    [systemd-analyze]=systemd
    # Server binaries for the tests' own clusters (tests/support/postgres.py); pg_ctlcluster
    # comes with them and is on PATH, initdb is not.
    [pg_ctlcluster]=postgresql
    [pg_dump]=postgresql-client
    # Permission tests drop root's capabilities or user (Essential on Debian, named for
    # minimal images).
    [setpriv]=util-linux
    [runuser]=util-linux
)
# Shared libraries (no binary to look for): WeasyPrint's text layout, fonts with Vietnamese.
LIBRARY_PACKAGES=(libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_debian_packages() {
    local missing=()
    for binary in "${!DEBIAN_PACKAGES[@]}"; do
        if ! command -v "$binary" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$binary" ] && [ ! -x "/usr/bin/$binary" ]; then
            missing+=("${DEBIAN_PACKAGES[$binary]}")
        fi
    done
    for package in "${LIBRARY_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$package")
        fi
    done
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        missing+=(python3-venv python3-pip)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    # The packages' own services are not ours: tests and the demo start private instances.
}

python_interpreter() {
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    log "Python 3.11 or newer is required"
    exit 1
}

install_python_packages() {
    if [ ! -x .venv/bin/python ]; then
        log "creating .venv"
        "$(python_interpreter)" -m venv .venv
    fi
    local stamp=.venv/.campuswatch-installed
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        log "installing CampusWatch and its Python dependencies into .venv"
        .venv/bin/python -m pip install -q --upgrade pip
        .venv/bin/python -m pip install -q -e ".[dev]"
        touch "$stamp"
    fi
}

run_checks_and_tests() {
    log "ruff check"
    .venv/bin/ruff check .
    log "ruff format --check"
    .venv/bin/ruff format --check .
    log "mypy (strict) on the packages and tests"
    PYTHON=.venv/bin/python .ci/typecheck
    log "pytest"
    .venv/bin/pytest "$@"
}

command=${1:-}
shift || true
case "$command" in
    demo)
        install_debian_packages
        install_python_packages
        exec .venv/bin/campuswatch demo "$@"
        ;;
    test)
        install_debian_packages
        install_python_packages
        run_checks_and_tests "$@"
        ;;
    install)
        install_debian_packages
        install_python_packages
        ;;
    *)
        echo "usage: $0 demo|test|install [args]" >&2
        exit 2
        ;;
esac
