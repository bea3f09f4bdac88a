#!/usr/bin/env bash
# Checks, before anything is built, that every tool, target and include path CI uses is present,
# and names the package that provides each missing one. Sourced by .ci/run after the install
# steps (so a missing install step fails here, in the first minutes, not deep in a build);
# runnable on its own too: `bash .ci/preflight.sh`.
#
# Each check: a description, a command that succeeds when the precondition holds, and where the
# missing piece comes from (a Debian package or a rustup command).

lorapki_preflight() {
    local missing=0

    check() { # check DESCRIPTION SOURCE COMMAND...
        local what="$1" source="$2"
        shift 2
        if "$@" >/dev/null 2>&1; then
            printf '   ok       %s\n' "$what"
        else
            printf '   MISSING  %s  (from: %s)\n' "$what" "$source"
            missing=$((missing + 1))
        fi
    }
    have() { command -v "$1"; }
    target_installed() { rustup target list --installed | grep -qx "$1"; }
    proto_includes() {
        # The well-known types chirpstack_api imports: compile a file that uses one of them.
        local dir
        dir="$(mktemp -d)" || return 1
        printf '%s\n' 'syntax = "proto3";' 'import "google/protobuf/timestamp.proto";' \
            'message Probe { google.protobuf.Timestamp at = 1; }' > "$dir/probe.proto"
        protoc -I "$dir" --descriptor_set_out="$dir/probe.pb" "$dir/probe.proto"
        local rc=$?
        rm -rf "$dir"
        return $rc
    }

    check "cargo" "rustup (the Rust toolchain)" have cargo
    check "rustfmt" "rustup component add rustfmt" cargo fmt --version
    check "clippy" "rustup component add clippy" cargo clippy --version
    local t
    for t in thumbv6m-none-eabi thumbv7m-none-eabi thumbv7em-none-eabihf \
        thumbv8m.main-none-eabihf x86_64-pc-windows-gnu; do
        check "Rust target $t" "rustup target add $t" target_installed "$t"
    done
    check "openssl (interoperability tests)" "Debian package openssl" have openssl
    check "python3 (PROTOCOL.md §11 oracles, standard library only)" "Debian package python3" \
        have python3
    check "qemu-system-arm (firmware)" "Debian package qemu-system-arm" have qemu-system-arm
    check "arm-none-eabi-size (firmware size report)" "Debian package binutils-arm-none-eabi" \
        have arm-none-eabi-size
    check "x86_64-w64-mingw32-gcc (Windows build)" "Debian package gcc-mingw-w64-x86-64" \
        have x86_64-w64-mingw32-gcc
    check "protoc (feature chirpstack-grpc)" "Debian package protobuf-compiler" have protoc
    check "google/protobuf/*.proto on protoc's include path" "Debian package libprotobuf-dev" \
        proto_includes
    check "mosquitto (MQTT tests)" "Debian package mosquitto" \
        bash -c 'command -v mosquitto || test -x /usr/sbin/mosquitto'
    check "redis-server (ChirpStack tests)" "Debian package redis-server" \
        bash -c 'command -v redis-server'
    check "PostgreSQL server binaries (store tests)" "Debian package postgresql" \
        compgen -G "/usr/lib/postgresql/*/bin/initdb"

    unset -f check have target_installed proto_includes
    if [ "$missing" -gt 0 ]; then
        echo "preflight: $missing precondition(s) missing; install them (or fix the install step" \
            "in .ci/) and run again" >&2
        return 1
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    lorapki_preflight || exit 1
fi
