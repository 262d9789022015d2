#!/bin/bash
# Builds the libFuzzer targets of fuzz/ (clang, -fsanitize=fuzzer,address,
# undefined) and runs each for FUZZ_SECONDS (default 60) from its seed
# corpus in fuzz/corpus/TARGET; a crash, a sanitizer report or a failed
# check of a target fails the run, and its input is kept in
# build/fuzz/crashes.  Prints the executions per target.
#
#   bash fuzz/run.sh [TARGET ...]      (make fuzz FUZZ_SECONDS=N)
#
# Our sources are built against nginx's headers and core string and pool
# code, from Debian's source of nginx, configured as for the module
# (build/objs, made by "make"), and with cJSON from Debian's source (with
# Debian's patches, as libcjson1 is built), all under the sanitizers
# (t/debian-source.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
out=build/fuzz
ngx=$out/nginx-src
cjson=$out/cjson-src
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(reply error form)

[ -f build/objs/ngx_auto_config.h ] || {
    echo "fuzz/run.sh: build the module first (make)" >&2; exit 1; }

[ -f "$ngx/src/core/ngx_string.c" ] || bash t/debian-source.sh nginx "$ngx"
[ -f "$cjson/cJSON.c" ] || bash t/debian-source.sh cjson "$cjson"

inc=()
for d in core event event/modules os/unix http http/modules http/v2; do
    inc+=(-I "$ngx/src/$d")
done
inc+=(-I build/objs -I src)

# <cjson/cJSON.h> from the source, not the system's headers
mkdir -p "$out/include/cjson"
cp "$cjson/cJSON.h" "$out/include/cjson/"
inc+=(-I "$out/include")

cflags=(-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined
        -fno-sanitize-recover=undefined)

mkdir -p "$out/objs" "$out/crashes"

objs=()
for c in src/ngx_http_dqe_oauth_parse.c "$cjson/cJSON.c" \
         "$ngx/src/core/ngx_string.c" "$ngx/src/core/ngx_palloc.c" \
         "$ngx/src/os/unix/ngx_alloc.c" fuzz/stubs.c; do
    o=$out/objs/$(basename "$c" .c).o
    clang -c "${cflags[@]}" "${inc[@]}" "$c" -o "$o"
    objs+=("$o")
done

status=0

for t in "${targets[@]}"; do
    clang "${cflags[@]}" -fsanitize=fuzzer "${inc[@]}" "fuzz/$t.c" \
        "${objs[@]}" -o "$out/$t"

    work=$out/corpus/$t
    mkdir -p "$work" "$out/crashes/$t"

    dict=()
    [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")

    log=$out/$t.log

    if "$out/$t" "$work" "fuzz/corpus/$t" "${dict[@]}" \
           -max_total_time="$seconds" -max_len=16384 -timeout=10 \
           -artifact_prefix="$out/crashes/$t/" -print_final_stats=1 \
           >"$log" 2>&1
    then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "fuzz $t: $runs executions in ${seconds} s, no crash" \
             "(corpus: $(ls "$work" | wc -l) inputs)"
    else
        echo "fuzz $t: FAILED, see $log and $out/crashes/$t/" >&2
        tail -30 "$log" >&2
        status=1
    fi
done

exit $status
