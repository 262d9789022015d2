#!/usr/bin/python3
# Prometheus text on stdin, read by Debian's python3-prometheus-client (the
# parser Prometheus's own Python client uses): a JSON object on stdout,
# "name{label=value,...}" (labels sorted) => value.  Exit 1 if it does not
# parse.
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

out = {}
try:
    for family in text_string_to_metric_families(sys.stdin.read()):
        for s in family.samples:
            labels = ",".join("%s=%s" % kv for kv in sorted(s.labels.items()))
            out["%s{%s}" % (s.name, labels)] = s.value
except Exception as e:
    print("does not parse: %s" % e, file=sys.stderr)
    sys.exit(1)

json.dump(out, sys.stdout)
