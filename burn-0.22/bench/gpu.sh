#!/usr/bin/env bash
# The 0.2 line's benchmark on a borrowed GPU machine, which has no Rust toolchain and no
# package registry. Two halves:
#
#   burn-0.22/bench/gpu.sh pack          here: builds the release binary (wgpu, flex), strips
#                                        it and compresses it to burn-0.22/target/gpu/ (about
#                                        20 MB, under the 64 MiB a device run carries)
#   burn-0.22/bench/gpu.sh run OUT_DIR   there, from the repository root with
#                                        burn-0.22/target/gpu carried: unpacks the binary and
#                                        runs the benchmark on wgpu as a real GPU (--gpu), the
#                                        row path with indices checked (sparse), with lookups
#                                        planned on the device (sparse-device) and Burn's Adam,
#                                        at 10^5 and 10^6 rows, then 10^7 (over 2 GiB: refused
#                                        where the adapter binds less, which its log says);
#                                        writes the report, the JSON lines and the device's
#                                        description into OUT_DIR
#
# The binary needs `xz`, a glibc at least as new as this machine's, and the GPU machine's
# Vulkan driver (wgpu's backend on Linux). `run` exits non-zero when a measurement failed
# (10^7 rows are refused by an adapter that binds under 2.56 GB: its log says so).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
packed="$root/target/gpu/sparse-adam-bench-022.xz"

case "${1:-}" in
  pack)
    (cd "$root" && cargo build --release -p sparse-adam-bench-022)
    mkdir -p "$root/target/gpu"
    strip -o "$root/target/gpu/sparse-adam-bench-022" "$root/target/release/sparse-adam-bench-022"
    xz -T0 -6 -f "$root/target/gpu/sparse-adam-bench-022"
    ls -l "$packed"
    ;;
  run)
    out="${2:?usage: gpu.sh run OUT_DIR}"
    mkdir -p "$out"
    : > "$out/bench.jsonl"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    bin="$tmp/sparse-adam-bench-022"
    xz -dc "$packed" > "$bin"
    chmod +x "$bin"
    { nvidia-smi || true; vulkaninfo --summary || true; } > "$out/device.txt" 2>&1
    status=0
    for rows in 1e5,1e6 1e7; do
      "$bin" --backend wgpu --gpu --rows "$rows" --impls sparse,sparse-device,adam \
        > "$out/report-$rows.txt" 2> "$out/log-$rows.txt" || status=$?
      grep '^{' "$out/report-$rows.txt" >> "$out/bench.jsonl" || true
    done
    exit "$status"
    ;;
  *)
    echo "usage: $0 pack | run OUT_DIR" >&2
    exit 2
    ;;
esac
