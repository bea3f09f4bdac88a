#!/usr/bin/env bash
# Builds the device firmware and runs PROTOCOL.md §11 on it in QEMU; prints the firmware's checks
# and measurements and the image's flash and RAM sizes.
#
#   run-qemu.sh                 both boards: mps2-an505 (Cortex-M33), then mps2-an385 (Cortex-M3)
#   run-qemu.sh TARGET...       only these: thumbv8m.main-none-eabihf and/or thumbv7m-none-eabi
#
# Exits non-zero when a build fails, the firmware reports FAIL (or panics), QEMU does not finish
# within 120 s, or a §11 value in src/vectors.rs no longer appears in PROTOCOL.md.
# Needs qemu-system-arm (Debian: qemu-system-arm) and the Rust targets; for the sizes,
# arm-none-eabi-size (binutils-arm-none-eabi) or llvm-size.
set -euo pipefail
cd "$(dirname "$0")"

PROFILE=embedded
TIMEOUT=${QEMU_TIMEOUT:-120}
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=(thumbv8m.main-none-eabihf thumbv7m-none-eabi)
fi

if ! command -v qemu-system-arm >/dev/null 2>&1; then
    echo "run-qemu.sh: qemu-system-arm not found (Debian: apt-get install qemu-system-arm)" >&2
    exit 1
fi

echo "==> the §11 values of src/vectors.rs are those of PROTOCOL.md"
spec=../../crates/lorapki-proto/PROTOCOL.md
values=$(grep -oE '"[0-9a-f]{16,}"' src/vectors.rs | tr -d '"')
count=0
for value in $values; do
    if ! grep -qF "$value" "$spec"; then
        echo "run-qemu.sh: $value (src/vectors.rs) is not in $spec" >&2
        exit 1
    fi
    count=$((count + 1))
done
echo "   $count values found in PROTOCOL.md"

size_tool=""
for tool in arm-none-eabi-size llvm-size; do
    if command -v "$tool" >/dev/null 2>&1; then
        size_tool=$tool
        break
    fi
done

target_dir=${CARGO_TARGET_DIR:-target}
for target in "${targets[@]}"; do
    echo
    echo "==> build: $target, profile $PROFILE"
    cargo build --profile "$PROFILE" --target "$target"
    elf="$target_dir/$target/$PROFILE/lorapki-device-cortex-m"

    echo "==> run in QEMU (timeout ${TIMEOUT} s)"
    log=$(mktemp)
    status=0
    # `cargo run` uses the runner of .cargo/config.toml; timeout signals the whole process group,
    # QEMU included. The build above is done, so the time limit is the firmware's alone.
    timeout "$TIMEOUT" cargo run --quiet --profile "$PROFILE" --target "$target" \
        2>&1 | tee "$log" || status=$?
    last=$(tail -n 1 "$log")
    rm -f "$log"
    if [ "$status" -eq 124 ]; then
        echo "run-qemu.sh: $target: no result within ${TIMEOUT} s" >&2
        exit 1
    fi
    if [ "$status" -ne 0 ] || [ "$last" != "PASS" ]; then
        echo "run-qemu.sh: $target: FAIL (QEMU exit status $status)" >&2
        exit 1
    fi

    echo "==> image size: $elf"
    if [ -n "$size_tool" ]; then
        "$size_tool" -A "$elf" | awk '
            $1 == ".vector_table" || $1 == ".text" || $1 == ".rodata" { flash += $2 }
            $1 == ".data" { flash += $2; ram += $2 }
            $1 == ".bss" || $1 == ".uninit" { ram += $2 }
            $1 ~ /^\.(vector_table|text|rodata|data|bss|uninit|gnu\.sgstubs)$/ {
                printf "   %-14s %8d B\n", $1, $2
            }
            END {
                printf "   flash: %d B (.vector_table + .text + .rodata + .data)\n", flash
                printf "   static RAM: %d B (.data + .bss + .uninit); the stack is reported above\n", ram
            }'
    else
        echo "   (no arm-none-eabi-size or llvm-size: install binutils-arm-none-eabi for sizes)"
    fi
done

echo
echo "run-qemu.sh: PASS (${targets[*]})"
