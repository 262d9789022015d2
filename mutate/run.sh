#!/bin/bash
# make mutate: every mutant of mutate/mutants.txt, one at a time, against
# the test files mapped to it.  The tree (git ls-files, with the files not
# yet committed) is copied once to a directory of its own, configured and
# built once; then for each mutant: the edit is made, the module rebuilt
# (only the changed file recompiles), the mapped test files run in turn
# with DQE_MODULE pointing at that build until one fails, the file put
# back.  A mutant is
#
#   caught          a mapped test file failed (or timed out)
#   SURVIVED        all passed: a promise that no test checks
#   DOES NOT APPLY  its search text is not once in the file: the catalogue
#                   is out of step with the code
#   DOES NOT BUILD  the edit does not compile (with -Werror)
#
# and the run fails unless every one is caught.
#
#   MUTANTS=id1,id2   only those
#   MUTATE_DIR=dir    where the copy goes (default build/mutate)
#   MUTATE_TIMEOUT=s  the longest a test file may take (default 300)
#
# Each mutant's build and test output is kept in MUTATE_DIR/logs/ID.log.
set -uo pipefail
cd "$(dirname "$0")/.."

root=$PWD
work=${MUTATE_DIR:-$root/build/mutate}
tree=$work/tree
logs=$work/logs
nginx=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
limit=${MUTATE_TIMEOUT:-300}
module=$tree/build/objs/ngx_http_dqe_oauth_module.so

# the copy's catalogue: the tree as it was when the run began
catalogue=$tree/mutate/mutants.txt

catalogue() { perl "$tree/mutate/catalogue.pl" "$@"; }

start=$(date +%s)

rm -rf "$tree" "$logs" "$work/original"
mkdir -p "$tree" "$logs"

git ls-files -z -co --exclude-standard \
    | tar --null -T - -cf - | tar -C "$tree" -xf -

list=$(cd "$tree" && catalogue list "$catalogue") || exit 2

if [ -n "${MUTANTS:-}" ]; then
    want=",$MUTANTS,"
    list=$(echo "$list" | while IFS=$'\t' read -r id rest; do
               [[ $want == *",$id,"* ]] && printf '%s\t%s\n' "$id" "$rest"
           done)
    for id in ${MUTANTS//,/ }; do
        if ! echo "$list" | grep -q "^$id"$'\t'; then
            echo "no mutant \"$id\" in mutate/mutants.txt" >&2
            exit 2
        fi
    done
fi

total=$(echo "$list" | grep -c .)

echo "mutate: $total mutants; a copy of the tree in $tree;" \
     "building the module as it is (configure, once)"

if ! make -C "$tree" >"$logs/build.log" 2>&1; then
    tail -20 "$logs/build.log"
    echo "mutate: the tree as it is does not build" >&2
    exit 2
fi

if ! (cd "$tree" && catalogue check "$catalogue" "$tree" >/dev/null); then
    echo "mutate: (the mutants above do not apply; each is reported below)"
fi

# after a test file timed out: the nginx it started from the copy, if
# any (timeout ends prove and the mock, not a daemon): its master by pid,
# which stops its workers, then whatever is left of them

leftovers() {
    local masters pid child

    masters=$(pgrep -f -- "-p $tree/t/servroot" || true)
    [ -n "$masters" ] || return 0

    for pid in $masters; do
        kill -TERM "$pid" 2>/dev/null || true
    done

    sleep 3

    for pid in $masters; do
        for child in $(pgrep -P "$pid" || true); do
            kill -KILL "$child" 2>/dev/null || true
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# "caught t/NNN-x.t" or "survived", for the module built in the tree

run_tests() {
    local t rc

    for t in "$@"; do
        echo "=== $t" >>"$log"

        if [ "$t" = unit ]; then
            (cd "$tree" && timeout -k 10 "$limit" bash t/unit/run.sh) \
                >>"$log" 2>&1
        else
            (cd "$tree" && DQE_MODULE=$module TEST_NGINX_BINARY=$nginx \
                timeout -k 10 "$limit" bash t/prove.sh "$t") >>"$log" 2>&1
        fi

        rc=$?

        if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
            leftovers
            echo "caught $t (timed out)"
            return
        fi

        if [ $rc -ne 0 ]; then
            echo "caught $t"
            return
        fi
    done

    echo "survived"
}

n=0
caught=0
bad=()

while IFS=$'\t' read -r id file tests; do
    [ -n "$id" ] || continue
    n=$((n + 1))
    log=$logs/$id.log
    t0=$(date +%s)

    saved=0
    cp -p "$tree/$file" "$work/original" 2>/dev/null && saved=1

    if ! (cd "$tree" && catalogue apply "$catalogue" "$id" "$tree") \
           >"$log" 2>&1
    then
        result="DOES NOT APPLY"

    elif ! make -C "$tree" >>"$log" 2>&1; then
        result="DOES NOT BUILD"

    else
        # shellcheck disable=SC2086
        result=$(run_tests $tests)
    fi

    # the original back, newer than the objects built from the mutant
    if [ $saved = 1 ]; then
        cp "$work/original" "$tree/$file"
        touch "$tree/$file"
    fi

    case $result in
    caught*) caught=$((caught + 1)) ;;
    survived) result="SURVIVED"; bad+=("$id") ;;
    *) bad+=("$id") ;;
    esac

    printf '[%2d/%d] %-32s %-44s %3ss\n' "$n" "$total" "$id" "$result" \
           $(( $(date +%s) - t0 ))

done <<<"$list"

elapsed=$(( $(date +%s) - start ))

echo
printf 'mutate: %d of %d caught (%d%%) in %dm%02ds\n' "$caught" "$total" \
       $(( total ? 100 * caught / total : 0 )) $((elapsed / 60)) \
       $((elapsed % 60))

if [ ${#bad[@]} -gt 0 ]; then
    for id in "${bad[@]}"; do
        echo "  $id: $(cd "$tree" && catalogue promise "$catalogue" "$id")"
    done
    echo "mutate: FAILED (logs in $logs)"
    exit 1
fi

echo "mutate: every mutant caught"
