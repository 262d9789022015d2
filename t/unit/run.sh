#!/bin/bash
# The unit tests of t/unit: each file a program, built and run; "make test"
# runs this first.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=build/unit
mkdir -p "$out"

# natively, and as a 32-bit program where the compiler can make one
# (gcc-multilib): pointers, ngx_uint_t and ngx_msec_t all 32 bits wide

flavours=(native)
if echo 'int main(void) { return 0; }' \
   | ${CC:-cc} -m32 -x c -o "$out/m32-probe" - 2>/dev/null; then
    flavours+=(m32)
else
    echo "t/unit: no -m32 compiler (apt-get install gcc-multilib): native only"
fi

for src in t/unit/*.c; do
    for flavour in "${flavours[@]}"; do
        bin=$out/$(basename "$src" .c)-$flavour
        flags=()
        [ "$flavour" = m32 ] && flags=(-m32)
        ${CC:-cc} "${flags[@]}" -std=c99 -Wall -Wextra -Werror -O2 -I src \
            -o "$bin" "$src"
        if ! result=$("$bin"); then
            echo "$result"
            echo "t/unit/$(basename "$src") ($flavour): FAILED" >&2
            exit 1
        fi
        echo "t/unit/$(basename "$src") ($flavour): ${result##*$'\n'}"
    done
done
