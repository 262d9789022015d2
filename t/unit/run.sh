#!/bin/bash
# The unit tests of t/unit: each file a program, built and run; "make test"
# runs this first.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=build/unit
mkdir -p "$out"

for src in t/unit/*.c; do
    bin=$out/$(basename "$src" .c)
    ${CC:-cc} -std=c99 -Wall -Wextra -Werror -O2 -I src -o "$bin" "$src"
    if ! result=$("$bin"); then
        echo "$result"
        echo "t/unit/$(basename "$src"): FAILED" >&2
        exit 1
    fi
    echo "t/unit/$(basename "$src"): ${result##*$'\n'}"
done
