#!/usr/bin/env bash
# Test services of lorapki-server: installs (Debian packages) and starts a mosquitto broker and a
# PostgreSQL cluster on loopback ports of their own, and exports the variables the tests read:
#
#   LORAPKI_TEST_MQTT=127.0.0.1:<port>         mosquitto, anonymous, loopback only
#   LORAPKI_TEST_POSTGRES=postgres://...       a throw-away database, trust auth, loopback only
#
# Also installs the mingw-w64 cross toolchain and the Rust target for the Windows build check
# (exports CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER), and protoc with the well-known .proto files
# (protobuf-compiler, libprotobuf-dev) for the optional `chirpstack-grpc` feature of
# lorapki-server and the `chirpstack` feature of lorapki-testnet, and redis-server (the
# ChirpStack tests start their own Redis, mosquitto and ChirpStack). Where the ChirpStack binary of ../shared/chirpstack/ exists, exports
# LORAPKI_TEST_CHIRPSTACK (its path) for the tests that need a real network server; otherwise
# those tests print SKIPPED.
#
# Use it by sourcing, so that the exports reach the caller:
#
#   source .ci/services.sh            # install + start, exports the variables
#   lorapki_services_stop             # (optional) stop both services at the end
#
# Idempotent: a second source reuses running services. Works as root (installs with apt-get);
# without root, the packages must already be installed. State lives under $LORAPKI_SERVICES_DIR
# (default /tmp/lorapki-services).

lorapki_services_main() {
    local dir="${LORAPKI_SERVICES_DIR:-/tmp/lorapki-services}"
    local mqtt_port="${LORAPKI_MQTT_PORT:-18830}"
    local pg_port="${LORAPKI_PG_PORT:-15432}"
    mkdir -p "$dir" || return 1

    # --- packages -------------------------------------------------------------------------------
    local need=()
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
    # Redis, for the real ChirpStack of lorapki-testnet's tests (each test starts its own).
    command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
    command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || need+=(gcc-mingw-w64-x86-64)
    # protoc and the well-known types it imports (google/protobuf/timestamp.proto, ...), for the
    # optional chirpstack-grpc feature (chirpstack_api compiles its definitions). The .proto files
    # are in libprotobuf-dev, which --no-install-recommends does not bring with protobuf-compiler.
    command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
    [ -f /usr/include/google/protobuf/timestamp.proto ] || need+=(libprotobuf-dev)
    if [ ${#need[@]} -gt 0 ]; then
        if [ "$(id -u)" != 0 ]; then
            echo "services.sh: missing packages ${need[*]} (run as root)" >&2
            return 1
        fi
        echo "services.sh: installing ${need[*]}"
        apt-get update -qq || return 1
        # Keep the packages' own services from starting: we run private instances.
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${need[@]}" >/dev/null
        local rc=$?
        rm -f /usr/sbin/policy-rc.d
        [ $rc = 0 ] || return 1
    fi
    if command -v rustup >/dev/null 2>&1; then
        rustup target add x86_64-pc-windows-gnu >/dev/null 2>&1 || true
    fi
    export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc

    # --- mosquitto ------------------------------------------------------------------------------
    local mosq_bin
    mosq_bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$mqtt_port") 2>/dev/null; then
        cat > "$dir/mosquitto.conf" <<CONF
listener $mqtt_port 127.0.0.1
allow_anonymous true
persistence false
pid_file $dir/mosquitto.pid
max_queued_messages 100000
log_dest file $dir/mosquitto.log
CONF
        if [ "$(id -u)" = 0 ]; then echo "user root" >> "$dir/mosquitto.conf"; fi
        "$mosq_bin" -c "$dir/mosquitto.conf" -d || return 1
        local i
        for i in $(seq 1 50); do
            (exec 3<>"/dev/tcp/127.0.0.1/$mqtt_port") 2>/dev/null && break
            sleep 0.1
        done
    fi
    export LORAPKI_TEST_MQTT="127.0.0.1:$mqtt_port"

    # --- PostgreSQL -----------------------------------------------------------------------------
    local bin pgdata="$dir/pgdata" as_pg=()
    bin="$(dirname "$(compgen -G "/usr/lib/postgresql/*/bin/initdb" | sort -V | tail -n1)")"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres || return 1
        chown postgres "$dir"
        as_pg=(runuser -u postgres --)
    fi
    if [ ! -s "$pgdata/PG_VERSION" ]; then
        "${as_pg[@]}" "$bin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 >/dev/null ||
            return 1
    fi
    if ! "${as_pg[@]}" "$bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
        "${as_pg[@]}" "$bin/pg_ctl" -D "$pgdata" -l "$dir/postgres.log" -w \
            -o "-p $pg_port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" \
            start >/dev/null || return 1
    fi
    "${as_pg[@]}" "$bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'lorapki_test'" | grep -q 1 ||
        "${as_pg[@]}" "$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres lorapki_test ||
        return 1
    export LORAPKI_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pg_port/lorapki_test?sslmode=disable"
    export LORAPKI_SERVICES_DIR="$dir"

    # --- ChirpStack (a binary provided beside the repository, not installed) ---------------------
    local here cs
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    cs="$here/../../shared/chirpstack/chirpstack"
    if [ -z "${LORAPKI_TEST_CHIRPSTACK:-}" ] && [ -x "$cs" ]; then
        LORAPKI_TEST_CHIRPSTACK="$(cd "$(dirname "$cs")" && pwd)/chirpstack"
        export LORAPKI_TEST_CHIRPSTACK
    fi
    if [ -n "${LORAPKI_TEST_CHIRPSTACK:-}" ]; then
        echo "services.sh: LORAPKI_TEST_CHIRPSTACK=$LORAPKI_TEST_CHIRPSTACK"
    else
        echo "services.sh: SKIPPED: no ChirpStack binary at $cs (set LORAPKI_TEST_CHIRPSTACK)"
    fi
    echo "services.sh: LORAPKI_TEST_MQTT=$LORAPKI_TEST_MQTT"
    echo "services.sh: LORAPKI_TEST_POSTGRES=$LORAPKI_TEST_POSTGRES"
}

lorapki_services_stop() {
    local dir="${LORAPKI_SERVICES_DIR:-/tmp/lorapki-services}" bin as_pg=()
    bin="$(dirname "$(compgen -G "/usr/lib/postgresql/*/bin/initdb" | sort -V | tail -n1)")"
    [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/pgdata" -m fast stop >/dev/null 2>&1 || true
    if [ -f "$dir/mosquitto.pid" ]; then kill "$(cat "$dir/mosquitto.pid")" 2>/dev/null || true; fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    # Executed rather than sourced: start the services and print the exports for `eval`.
    lorapki_services_main >&2 || exit 1
    echo "export LORAPKI_TEST_MQTT='$LORAPKI_TEST_MQTT'"
    echo "export LORAPKI_TEST_POSTGRES='$LORAPKI_TEST_POSTGRES'"
    echo "export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER='$CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER'"
else
    lorapki_services_main || return 1
fi
